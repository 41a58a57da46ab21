"""``<run>/split.json``: which backgrounds and foregrounds each part of the held-out split holds."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from fgbg.run_dirs import SPLIT_FILE


class SplitFile(L.Callback):
    """Write the DataModule's ``split_description`` to ``<trainer.default_root_dir>/split.json`` on setup.

    Lightning sets the DataModule up before the callbacks, so the split is made by then; only the
    global-rank-zero process writes. eval reads a run's file to check that its test part was held out.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        split = getattr(trainer.datamodule, "split_description", None)
        if not split or not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / SPLIT_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(split, indent=1))
