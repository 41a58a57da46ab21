"""``train.py``'s body: build every component from the composed config, fit, test on the held-out split.

A run stopped by SIGTERM or Ctrl-C saves where it was and exits non-zero with the command that resumes it;
the resumed run ends with the weights an uninterrupted one would have.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fgbg.errors import check_seed
from fgbg.training.callbacks import CleanExit, PredictionGrid, RngState
from fgbg.training.module import build_module, read_checkpoint

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
    """Fit (resuming from ``cfg.ckpt_path`` when set), then test; return the last logged metrics.

    Stopped by SIGTERM or Ctrl-C (see :class:`~fgbg.training.callbacks.CleanExit`): ``last.ckpt`` is saved at the
    step reached, ``metrics.json`` gets what was logged and ``"interrupted": "<signal>"``, the command that
    resumes is printed, and it raises ``SystemExit(128 + signal)``: 143 for SIGTERM, 130 for Ctrl-C.
    """
    seed = check_seed(cfg.seed)
    if cfg.get("ckpt_path"):
        read_checkpoint(cfg.ckpt_path)  # a missing or foreign file: one line naming it, before anything is built
    L.seed_everything(seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    clean_exit = CleanExit()
    trainer = build_trainer(cfg, callbacks=[*instantiate_all(cfg.get("callbacks")), RngState(), clean_exit])
    metrics: dict[str, float] = {}
    started, fit_seconds = time.perf_counter(), None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_seconds = time.perf_counter() - started
        metrics = _logged(trainer)
        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics |= _logged(trainer, "test/")
    except SystemExit:
        # How Lightning ends a run stopped by a signal: SIGTERMException, or sys.exit(1) after a Ctrl-C.
        if clean_exit.signal is None:
            raise
        if fit_seconds is None:  # stopped while fitting: what it has logged so far
            metrics = _logged(trainer)
    finally:
        _finish_wandb(trainer)
    fit_seconds = time.perf_counter() - started if fit_seconds is None else fit_seconds
    if trainer.is_global_zero:
        summary = {
            "model": cfg.model._target_.rsplit(".", 1)[-1],
            "parameters": sum(p.numel() for p in module.net.parameters()),
            "fit_seconds": round(fit_seconds, 1),
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            **metrics,
        }
        if clean_exit.signal is not None:
            summary["interrupted"] = clean_exit.signal.name
        (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(summary, indent=1))
    _say_where(cfg, trainer)
    if clean_exit.signal is not None:
        _say_how_to_resume(trainer, clean_exit)
        raise SystemExit(128 + clean_exit.signal)
    return metrics


def _logged(trainer: L.Trainer, prefix: str = "") -> dict[str, float]:
    """The trainer's last logged metrics whose names start with ``prefix``, as floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def _say_how_to_resume(trainer: L.Trainer, clean_exit: CleanExit) -> None:
    if not trainer.is_global_zero:
        return
    last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    checkpoint = clean_exit.checkpoint or (Path(last) if last and Path(last).exists() else None)
    stopped = f"stopped by {clean_exit.signal.name} at step {trainer.global_step} (epoch {trainer.current_epoch})"
    if checkpoint is None:
        log.warning(f"{stopped}; no checkpoint to resume from: run the same command again")
        return
    log.warning(f"{stopped}; checkpoint {checkpoint}\nresume with:  {_resume_command(checkpoint)}")


def _resume_command(checkpoint: str | Path) -> str:
    """``python train.py ckpt_path=<checkpoint>`` and this run's command-line overrides (Hydra's record of
    them, ``.hydra/overrides.yaml``; none outside Hydra) but its ``ckpt_path``, quoted for a shell."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != "ckpt_path"]
    return shlex.join(["python", "train.py", f"ckpt_path={checkpoint}", *kept])


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
