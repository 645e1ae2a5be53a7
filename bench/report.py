"""Figures, their statistics and the results file."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One measured figure: samples (in `unit`) against a target for the median. `missing` says
    why a figure could not be measured on this machine (then it has no samples)."""

    name: str
    samples: Sequence[float]
    target: float | None
    unit: str = "ms"
    missing: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]

    @property
    def met(self) -> str:
        if self.target is None:
            return "—"
        return "yes" if self.median <= self.target else "NO"

    def row(self) -> str:
        target = "—" if self.target is None else f"≤ {self.target:g} {self.unit}"
        if self.missing is not None:
            blank = ["—"] * 4
            cells = [f"{self.name} ({self.unit})", *blank, "0", target, f"not measured: {self.missing}"]
            return "| " + " | ".join(cells) + " |"
        cells = [
            f"{self.name} ({self.unit})",
            f"{self.median:.2f}",
            f"{self.p90:.2f}",
            f"{min(self.samples):.2f}",
            f"{max(self.samples):.2f}",
            str(len(self.samples)),
            target,
            self.met,
        ]
        return "| " + " | ".join(cells) + " |"


HEADER = "| figure | median | p90 | min | max | runs | target | met |\n|---|---|---|---|---|---|---|---|"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}"
    )


def render(title: str, figures: Sequence[Figure], notes: Sequence[str] = ()) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title}", "", f"Measured {when} on {machine()}.", "", HEADER, *(f.row() for f in figures)]
    lines += ["", *(f"- {note}" for note in notes)] if notes else []
    return "\n".join(lines) + "\n"
