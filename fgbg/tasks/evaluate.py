"""``eval.py``'s body: a checkpoint's losses and metrics on the held-out test split, printed and in ``metrics.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from fgbg.data.index import DatasetError
from fgbg.errors import check_seed
from fgbg.tasks.train import build_trainer
from fgbg.training.module import load_module

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on the test split of ``cfg.data``; write ``<paths.output_dir>/metrics.json``.

    The split is the one ``train.py`` makes from the same data overrides and ``seed``. When the
    checkpoint sits in a training run folder (``<run>/checkpoints/*.ckpt`` next to ``<run>/split.json``),
    a test split that shares backgrounds or foregrounds with that run's training part is refused. Data
    settings that prepare images otherwise than the checkpoint's training did are warned about.
    Returns ``{"test/<name>": value}``.
    """
    L.seed_everything(check_seed(cfg.seed), workers=True)
    module = load_module(cfg.ckpt_path)
    _warn_if_preprocessed_otherwise(module.hparams["config"].get("data"), cfg.data)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    check_held_out(Path(cfg.ckpt_path).resolve().parent.parent / "split.json", datamodule.split_description)
    trainer = build_trainer(cfg)
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {key: float(value) for key, value in sorted(metrics.items())}
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
    out = Path(cfg.paths.output_dir) / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    log.info("%s\n%s\nwritten to %s", cfg.ckpt_path, format_table(metrics), out)
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
            "pass the training run's seed and data.* overrides"
        )


def _warn_if_preprocessed_otherwise(trained: dict | None, data: DictConfig) -> None:
    # Checkpoints record their training transform (see build_module); a different one is allowed (e.g. to
    # test another resolution) but is rarely what was meant.
    differ = {key: (value, data.get(key)) for key, value in (trained or {}).items() if data.get(key) != value}
    if differ:
        log.warning("data settings differ from the checkpoint's training (trained, now): %s", differ)


def format_table(metrics: dict[str, float]) -> str:
    """``name  value`` lines, names aligned, values to 4 decimals."""
    width = max(map(len, metrics), default=0)
    return "\n".join(f"{name:<{width}}  {value:.4f}" for name, value in metrics.items())
