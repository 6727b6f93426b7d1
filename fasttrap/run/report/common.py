"""What the reports of every analysis share: number formatting and the stage-timing table."""

from __future__ import annotations

from typing import Any

import numpy as np


def fmt(x: Any, nd: int = 3) -> str:
    """x to ``nd`` significant digits; None and non-finite numbers as "–"."""
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not np.isfinite(x):
        return "–"
    return f"{x:.{nd}g}"


def stage_table(manifest: dict[str, Any]) -> list[str]:
    """The markdown table of seconds per stage."""
    lines = ["| stage | seconds |", "|---|---:|"]
    for k, v in manifest["stages"].items():
        lines.append(f"| {k} | {v.get('seconds', 0):.1f} |")
    if "report" not in manifest["stages"]:
        lines.append("| report | (being written: its time is in manifest.json) |")
    return lines
