"""Results of runs and sweeps: a run's table and loss curves, and one table of every job of any sweep.

A run: :class:`~fgbg.training.callbacks.Curves` (conf/callbacks/default.yaml) keeps each epoch's logged values
and writes ``<run>/results.md`` (:func:`epoch_table`) and ``<run>/curves.png`` (:func:`plot_curves`).
A sweep: :class:`SweepResults` (conf/hydra/default.yaml, so every multirun has it) writes
``<sweep dir>/results.md`` (:func:`sweep_table`): one row per job, its overrides and its ``metrics.json`` values.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fgbg.run_dirs import METRICS_FILE

log = logging.getLogger(__name__)

RESULTS_FILE = "results.md"  # a run's and a sweep's table
CURVES_FILE = "curves.png"  # a run's loss curves
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"  # a job's command-line overrides, as Hydra writes them


def _cell(value) -> str:
    """A table cell: floats to 4 significant digits, a missing value as ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value).replace("|", "\\|")


def _markdown(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows])


def on_test_split(metric: str) -> str | None:
    """The test split's counterpart of a validation metric (``val/mask_iou`` -> ``test/mask_iou``); None for others."""
    stage, sep, name = metric.partition("/")
    return f"test{stage[3:]}/{name}" if sep and stage.startswith("val") else None


def epoch_table(history: dict[int, dict[str, float]], metrics: Sequence[str], test: dict[str, float]) -> str:
    """Markdown: one row per epoch of ``history`` (``{epoch: {name: value}}``) with the columns of ``metrics`` that
    any epoch has, then a ``test`` row of their test counterparts (:func:`on_test_split`) when ``test`` holds any."""
    columns = [m for m in metrics if any(m in values for values in history.values())]
    rows = [[epoch, *(history[epoch].get(m) for m in columns)] for epoch in sorted(history)]
    test_row = [test.get(on_test_split(m) or "") for m in columns]
    if any(value is not None for value in test_row):
        rows.append(["test", *test_row])
    return _markdown(["epoch", *columns], rows)


def plot_curves(history: dict[int, dict[str, float]], metrics: Sequence[str], path: str | Path, title: str) -> Path:
    """``path``: the ``metrics`` over the epochs of ``history``, the losses (names ending in ``loss``) on the left,
    the other values (held-out scores) on the right."""
    from matplotlib.figure import Figure  # here: every entry point loads this module (Hydra's callbacks)

    epochs = sorted(history)
    losses = [m for m in metrics if m.endswith("loss")]
    panels = [(losses, "loss"), ([m for m in metrics if m not in losses], "held-out metrics")]
    figure = Figure(figsize=(10, 4), layout="constrained")
    figure.suptitle(title)
    for axes, (names, ylabel) in zip(figure.subplots(1, 2), panels):
        for name in names:
            points = [(epoch, history[epoch][name]) for epoch in epochs if name in history[epoch]]
            if points:
                axes.plot(*zip(*points), "o-", label=name, markersize=3)
        axes.set(xlabel="epoch", ylabel=ylabel)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
    figure.savefig(path, dpi=100)
    return Path(path)


def _short(override: str) -> str:
    """``optimizer.lr=0.0012520653814999472`` -> ``optimizer.lr=0.001252``; other overrides as they are."""
    key, sep, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}={number:.4g}" if sep and any(c in value for c in ".eE") else override


def sweep_table(jobs: list[dict], metrics: Sequence[str]) -> str:
    """Markdown, one row per job of ``jobs`` (``{"job": name, "overrides": [...], "metrics": {...}}``): the
    overrides that tell it from the other jobs, and the ``metrics`` any job has; under the table, the overrides
    every job shares."""
    shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if len(jobs) > 1 else set()
    columns = [m for m in metrics if any(m in job["metrics"] for job in jobs)]
    rows = [
        [job["job"], " ".join(_short(o) for o in job["overrides"] if o not in shared) or "(none)",
         *(job["metrics"].get(m) for m in columns)]
        for job in jobs
    ]
    table = _markdown(["job", "overrides", *columns], rows)
    common = [o for o in jobs[0]["overrides"] if o in shared] if jobs else []
    return table + (f"\n\nEvery job: {' '.join(common)}" if common else "")


def read_jobs(sweep_dir: str | Path) -> list[dict]:
    """The jobs of a sweep folder (``<sweep>/<job number>/``) that wrote ``metrics.json``, in job order."""
    jobs = []
    for metrics_file in Path(sweep_dir).glob(f"*/{METRICS_FILE}"):
        job = metrics_file.parent
        overrides_file = job / OVERRIDES_FILE
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        jobs.append({"job": job.name, "overrides": overrides or [], "metrics": json.loads(metrics_file.read_text())})
    return sorted(jobs, key=lambda job: (len(job["job"]), job["job"]))  # job numbers: 2 before 10


class SweepResults(Callback):
    """After any multirun, ``<sweep dir>/results.md``: each job's overrides and its ``metrics`` (from the job's
    ``metrics.json``); nothing for a sweep whose jobs wrote none (``generate.py -m ...``).

    Args:
        metrics: the columns, keys of a job's ``metrics.json``; those no job has are left out.
    """

    def __init__(self, metrics: Sequence[str]):
        self.metrics = list(metrics)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        jobs = read_jobs(sweep)
        if not jobs:
            return
        table = sweep_table(jobs, self.metrics)
        (sweep / RESULTS_FILE).write_text(table + "\n")
        log.info("results of %d jobs (%s):\n%s", len(jobs), sweep / RESULTS_FILE, table)
