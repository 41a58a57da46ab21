"""``eval.py``'s body: a checkpoint's losses and metrics on the held-out test split, printed and in ``metrics.json``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from fgbg.data.index import DatasetError, held_out_parts
from fgbg.data.transforms import Preprocessing
from fgbg.errors import check_seed
from fgbg.run_dirs import METRICS_FILE, SPLIT_FILE, command_line_overrides, run_of, with_run_config
from fgbg.tasks.train import build_trainer
from fgbg.training.callbacks import SplitFile
from fgbg.training.module import load_module

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on the test split of its run; write ``<paths.output_dir>/metrics.json``.

    ``data`` and ``seed`` are the run's (``<run>/.hydra/config.yaml`` beside ``<run>/checkpoints/``) but for
    the keys of ``overrides`` (default: the command line's), so the split is the one the run held out; a
    checkpoint without its run folder uses ``cfg``'s, with a warning. A test split that shares backgrounds or
    foregrounds with the run's training part (``<run>/split.json``) is refused. Data settings that prepare
    images otherwise than the checkpoint's training did are warned about. Returns ``{"test/<name>": value}``.
    """
    module = load_module(cfg.ckpt_path)
    overrides = command_line_overrides() if overrides is None else list(overrides)
    cfg = with_run_config(cfg, cfg.ckpt_path, ("data", "seed"), overrides)
    L.seed_everything(check_seed(cfg.seed), workers=True)
    datamodule = instantiate(cfg.data)
    _warn_if_preprocessed_otherwise(module.preprocessing, datamodule.preprocessing)
    datamodule.setup("test")
    module.use_data(datamodule.has_depth, datamodule.depth_record)
    check_held_out(run_of(cfg.ckpt_path) / SPLIT_FILE, datamodule.split_description)
    trainer = build_trainer(cfg, callbacks=[SplitFile()])
    # One dict per test loader (clean, perturbed), each with its own names (test/..., test_perturbed/...).
    metrics = {key: float(value) for part in trainer.test(module, datamodule=datamodule, verbose=False) for key, value in part.items()}
    metrics = dict(sorted(metrics.items()))
    split = datamodule.split_description
    report = {
        "ckpt_path": str(cfg.ckpt_path),
        "data_dir": split["data_dir"],
        "strategy": split["strategy"],
        "test_samples": split["counts"]["test"],
        "test_bg": split["test_bg"],
        "test_fg": split["test_fg"],
        "metrics": metrics,
    }
    out = Path(cfg.paths.output_dir) / METRICS_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    counts = f"test split: {split['counts']['test']:,} samples, {held_out_parts(split)}"
    log.info("%s\n%s\n%s\nwritten to %s", cfg.ckpt_path, counts, format_table(metrics), out)
    return metrics


def check_held_out(train_split_path: Path, split: dict) -> None:
    """Raise :class:`~fgbg.data.index.DatasetError` if ``split``'s test backgrounds, or its test foregrounds when that run held
    foregrounds out, were in the training part of the run whose ``split.json`` is ``train_split_path``.

    Without that file (a checkpoint moved out of its run folder) only a warning says that nothing was checked.
    """
    if not train_split_path.exists():
        log.warning("no %s: cannot check that the test split was held out from training", train_split_path)
        return
    trained = json.loads(train_split_path.read_text())
    seen_bg = set(trained["train_bg"]) & set(split["test_bg"])
    # A run too small to hold foregrounds out trained on all of them; only its backgrounds are unseen.
    seen_fg = set(trained["train_fg"]) & set(split["test_fg"]) if trained["foregrounds_held_out"] else set()
    if seen_bg or seen_fg:
        raise DatasetError(
            f"the test split shares backgrounds {sorted(seen_bg)} / foregrounds {sorted(seen_fg)} with the "
            f"training part of {train_split_path} (strategy {trained['strategy']!r}, seed {trained['seed']}): "
            "leave out the seed and data.* overrides, or give the training run's"
        )


def _warn_if_preprocessed_otherwise(trained: Preprocessing | None, now: Preprocessing) -> None:
    # Checkpoints record their training preprocessing (see build_module); a different one is allowed (e.g. to
    # test another resolution) but is rarely what was meant.
    differ = trained.differences(now) if trained else {}
    if differ:
        log.warning("data settings differ from the checkpoint's training (trained, now): %s", differ)


def format_table(metrics: dict[str, float]) -> str:
    """``name  value`` lines, names aligned, values to 4 decimals."""
    width = max(map(len, metrics), default=0)
    return "\n".join(f"{name:<{width}}  {value:.4f}" for name, value in metrics.items())
