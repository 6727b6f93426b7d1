"""Plumbing every stage shares: atomic storage (:mod:`.store`) and progress bars (:mod:`.progress`).

They sit below the stages (dynamics and analysis checkpoint and report progress too), so that no
lower room imports from :mod:`fasttrap.run`.
"""
