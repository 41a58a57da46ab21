"""``train.py``'s body: build every component from the composed config, fit, test on the held-out split."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .callbacks import PredictionGrid
from .module import build_module

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list:
    """Every ``_target_`` item of a config group such as ``logger`` or ``callbacks``; none for an empty group."""
    return [instantiate(item) for item in (group or {}).values()]


def build_trainer(cfg: DictConfig, callbacks: list | None = None) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with ``cfg.logger``'s loggers, which get the whole composed config."""
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks or [], logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (resuming from ``cfg.ckpt_path`` when set), then test; return the last logged metrics."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    trainer = build_trainer(cfg, callbacks=instantiate_all(cfg.get("callbacks")))
    try:
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_seconds = time.perf_counter() - started
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics |= {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    finally:
        _finish_wandb(trainer)
    if trainer.is_global_zero:
        summary = {
            "model": cfg.model._target_.rsplit(".", 1)[-1],
            "parameters": sum(p.numel() for p in module.net.parameters()),
            "fit_seconds": round(fit_seconds, 1),
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            **metrics,
        }
        (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(summary, indent=1))
    _say_where(cfg, trainer)
    return metrics


def _finish_wandb(trainer: L.Trainer) -> None:
    # Each job of a sweep must be its own wandb run; Lightning leaves the run open.
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
        import wandb

        wandb.finish()


def _say_where(cfg: DictConfig, trainer: L.Trainer) -> None:
    if not trainer.is_global_zero:
        return
    out = Path(cfg.paths.output_dir)
    lines = [f"run folder:  {out}"]
    if trainer.checkpoint_callback and trainer.checkpoint_callback.dirpath:
        lines.append(f"checkpoints: {trainer.checkpoint_callback.dirpath}")
    lines += [f"grids:       {cb.dirpath}" for cb in trainer.callbacks if isinstance(cb, PredictionGrid)]
    wandb_dirs = sorted((out / "wandb").glob("*run-*"))
    if wandb_dirs:
        lines.append(f"wandb run:   {wandb_dirs[-1]}  (offline runs: `wandb sync {wandb_dirs[-1]}`)")
    log.info("\n".join(lines))
