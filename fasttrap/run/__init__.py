"""The main job, ``python -m fasttrap.run``: settings, run directories, stages, figures, reports.

* :mod:`.cli` — the command line; :mod:`.config` — the settings schema and profiles;
* :mod:`.rundir` — a run directory, its manifest and the public readers (:func:`open_run`);
* :mod:`.pipeline` — picks the analysis; :mod:`.stages` — one module of stages per analysis;
* :mod:`.report` — report.md, one module per analysis, one function per section;
* :mod:`.plots` — the figures.

Importing this package stays cheap (no matplotlib, no torch): ``python -m fasttrap.run --help``
answers at once.
"""
