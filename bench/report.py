"""The figures a run collects, and the summary table printed at its end."""

from __future__ import annotations

import statistics
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


ROUND_NAMES = ("all Ready after", "Ready when timed out")
"""The names of a headline round's time figure: it ended, or it timed out."""


def round_seconds(figures: Sequence[Figure], item: str) -> list[float]:
    """The times of ``item``'s rounds that ended with every host Ready, in the order run."""
    return [f.seconds for f in figures if f.item == item and f.seconds is not None]


def median_seconds(figures: Sequence[Figure], item: str) -> float | None:
    """The median time of ``item``'s rounds that ended (what ratios are computed from)."""
    times = round_seconds(figures, item)
    return statistics.median(times) if times else None


def spread(
    figures: Sequence[Figure], item: str, target: tuple[str, float] | None = None
) -> Figure | None:
    """``item``'s rounds as one figure, the median and the range, when it ran more than once:
    on a shared machine one round can take a fifth longer than the next a minute later, so a
    single round is no figure to compare against. The target is checked against the median,
    and missed if any round timed out."""
    ran = sum(f.item == item and f.name in ROUND_NAMES for f in figures)
    times = round_seconds(figures, item)
    if ran < 2:
        return None
    name = f"all Ready, median of {ran} rounds"
    if not times:
        return Figure(item, name, "none ended", "", False)
    median = statistics.median(times)
    value = f"{median:.1f} s (range {min(times):.1f}-{max(times):.1f})"
    if len(times) < ran:
        value += f", {ran - len(times)} timed out"
    if target is None:
        return Figure(item, name, value)
    return Figure(item, name, value, target[0], len(times) == ran and median < target[1])


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
