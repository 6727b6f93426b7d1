"""The error every data reader raises (shared by :mod:`.data` and :mod:`.cifar`, which import it from here)."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing, corrupt or inconsistent. The message names the file."""
