"""The figures a run collects, and the summary table printed at its end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    item: str
    """What was measured, e.g. ``1. provision 1000 hosts``."""
    name: str
    value: str
    target: str = ""
    met: bool | None = None
    """Whether the target was met; ``None`` when the figure has no target."""
    seconds: float | None = None
    """The time measured, for figures that are one (what ratios are computed from)."""


def say(text: str) -> None:
    print(text, flush=True)


def table(figures: Sequence[Figure]) -> str:
    rows = [("item", "figure", "value", "target")]
    for figure in figures:
        target = figure.target
        if figure.met is not None:
            target = f"{target} {'ok' if figure.met else 'MISSED'}"
        rows.append((figure.item, figure.name, figure.value, target))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
