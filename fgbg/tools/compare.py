"""``experiment=compare``: one table of every job of a sweep, written when the sweep ends (a Hydra callback)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fgbg.run_dirs import METRICS_FILE, Summary

log = logging.getLogger(__name__)

# (column title, key in a job's metrics.json, format): "clean" is the test split as it is, "perturbed" the same
# samples with seeded plate perturbations (fgbg.data.perturb), the same in every run.
COLUMNS = (
    ("model", Summary.MODEL, "{}"),
    ("parameters", Summary.PARAMETERS, "{:,}"),
    ("train time (s)", Summary.FIT_SECONDS, "{:.0f}"),
    ("steps", Summary.STEPS, "{:,}"),
    ("train images/s", "perf/samples_per_s", "{:.1f}"),
    ("test bg / fg", Summary.TEST_PARTS, "{}"),
    ("mask IoU clean", "test/mask_iou", "{:.3f}"),
    ("mask IoU perturbed", "test_perturbed/mask_iou", "{:.3f}"),
    ("per-image IoU clean", "test/mask_iou_per_image", "{:.3f}"),
    ("per-image IoU perturbed", "test_perturbed/mask_iou_per_image", "{:.3f}"),
    ("boundary IoU clean", "test/mask_boundary_iou", "{:.3f}"),
    ("boundary IoU perturbed", "test_perturbed/mask_boundary_iou", "{:.3f}"),
    ("depth delta1", "test/depth_delta1", "{:.3f}"),
    ("depth abs rel", "test/depth_abs_rel", "{:.3f}"),
    ("depth RMSE (m)", "test/depth_rmse_m", "{:.3f}"),
    ("depth SSIM", "test/depth_ssim", "{:.3f}"),
)


def comparison_table(runs: list[dict]) -> str:
    """Markdown table of the jobs' ``metrics.json`` contents, one row per job."""
    lines = ["| " + " | ".join(title for title, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for run in runs:
        cells = [fmt.format(run[key]) if key in run else "n/a" for _, key, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class CompareTable(Callback):
    """After a multirun, gather each job's ``metrics.json`` into ``<sweep dir>/compare.md`` and print it."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        runs = [json.loads(p.read_text()) for p in sorted(sweep.glob(f"*/{METRICS_FILE}"))]
        table = comparison_table(runs)
        (sweep / "compare.md").write_text(table + "\n")
        log.info("comparison of %d runs (%s):\n%s", len(runs), sweep / "compare.md", table)
