"""The bench's table: one row per measure with the seed's figure, ours and their ratio, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib.metadata import version

import torch


@dataclass
class Row:
    """One measure. ``target``: the least speed-up the issue asks for (None: for information).

    The speed-up is ``ours / seed`` for rates, ``seed / ours`` for times (``higher_is_better=False``).
    """

    measure: str
    unit: str
    seed: float | None
    ours: float | None
    target: float | None = None
    note: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if not self.seed or not self.ours:
            return None
        return self.ours / self.seed if self.higher_is_better else self.seed / self.ours

    def verdict(self) -> str:
        if self.target is None or self.ratio is None:
            return ""
        return f"met (>= {self.target:g}x)" if self.ratio >= self.target else f"MISSED (< {self.target:g}x)"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(rows: list[Row]) -> str:
    lines = ["| measure | unit | seed | ours | speed-up | target | note |", "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:,.1f}x" if r.ratio is not None else "-"
        lines.append(f"| {r.measure} | {r.unit} | {_number(r.seed)} | {_number(r.ours)} | {ratio} | {r.verdict()} | {r.note} |")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _load(average: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.1f}" for x in average)


def machine(load_at_start: tuple[float, float, float] | None = None) -> str:
    """The machine, its packages, and its load average (``os.getloadavg()``) at the start of a run (when given)
    and at its end: what the timings shared the CPU with."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = f"{_load(os.getloadavg())} at the end"
    if load_at_start is not None:
        load = f"{_load(load_at_start)} at the start, {load}"
    packages = ", ".join(f"{p} {version(p)}" for p in ("torch", "numpy", "pillow", "simplejpeg", "torchvision"))
    return (
        f"{platform.node()}: {_cpu_model()}, {os.cpu_count()} cores, GPU: {gpu}; Python {platform.python_version()}; "
        f"{packages}; load average (1/5/15 min): {load}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
