"""``train.py``'s body: build every component from the composed config, fit, test on the held-out split.

A model with nothing to fit by gradients (``model=subtraction``) is calibrated on the validation split instead,
then validated, tested and saved as a fitted one is (:mod:`fgbg.tasks.calibrated`).

A run stopped by SIGTERM or Ctrl-C saves where it was and exits non-zero with the command that resumes it;
the resumed run ends with the weights an uninterrupted one would have.
"""

from __future__ import annotations

import copy
import json
import logging
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from fgbg.data.index import held_out_parts
from fgbg.data.locate import check_data
from fgbg.errors import check_seed
from fgbg.hardware import use_channels_last
from fgbg.run_dirs import METRICS_FILE, Summary, command_line_overrides, override_key, save_config, with_run_config
from fgbg.tasks.calibrated import calibrate, fitted_without_gradients, last_checkpoint
from fgbg.training.callbacks import CleanExit, PredictionGrid, RngState, SplitFile
from fgbg.training.module import MaskDepthModule, build_module, read_checkpoint

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list:
    """Every ``_target_`` item of a config group such as ``logger`` or ``callbacks``; none for an empty group.
    An item set to null is left out: how an experiment switches off one of the group's defaults."""
    return [instantiate(item) for item in (group or {}).values() if item is not None]


def build_trainer(cfg: DictConfig, callbacks: list | None = None) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with ``cfg.logger``'s loggers, which get the whole composed config."""
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks or [], logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return trainer


def train(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, float]:
    """Fit (resuming from ``cfg.ckpt_path`` when set), then test; return the last logged metrics.

    A resumed run takes its config from the checkpoint's run folder (``<run>/.hydra/config.yaml``) but for
    ``paths`` and the keys of ``overrides`` (default: the command line's). The config trained with is saved as
    the run folder's, with the data's location absolute, so eval and resume find the data from any folder.

    Stopped by SIGTERM or Ctrl-C (see :class:`~fgbg.training.callbacks.CleanExit`): ``last.ckpt`` is saved at the
    step reached, ``metrics.json`` gets what was logged and ``"interrupted": "<signal>"``, the command that
    resumes is printed, and it raises ``SystemExit(128 + signal)``: 143 for SIGTERM, 130 for Ctrl-C.
    """
    overrides = command_line_overrides() if overrides is None else list(overrides)
    if cfg.get("ckpt_path"):
        read_checkpoint(cfg.ckpt_path)  # a missing or foreign file: one line naming it, before anything is built
        cfg = with_run_config(cfg, cfg.ckpt_path, None, overrides)
    L.seed_everything(check_seed(cfg.seed), workers=True)
    datamodule = instantiate(cfg.data)  # checks the data settings' values
    with open_dict(cfg):
        cfg.data.num_workers = datamodule.num_workers  # auto's number, in the saved config and the loggers'
    check_data(cfg)  # zips missing: one line, before a logger starts, and no run folder left behind
    _record_config(cfg)
    datamodule.setup("fit")  # the module needs to know whether the data has depth, and what its depth means
    module = build_module(cfg, datamodule)
    clean_exit = CleanExit()
    always = [RngState(), SplitFile(), clean_exit]
    trainer = build_trainer(cfg, callbacks=[*instantiate_all(cfg.get("callbacks")), *always])
    if fitted_without_gradients(module.net):
        metrics, fit_seconds = _calibrate_and_test(cfg, trainer, module, datamodule)
    else:
        metrics, fit_seconds = _fit_and_test(cfg, trainer, module, datamodule, clean_exit)
    if trainer.is_global_zero:
        held_out = {Summary.TEST_PARTS: held_out_parts(datamodule.split_description)}
        _write_summary(cfg, trainer, module, fit_seconds, metrics | held_out, clean_exit)
    _say_where(cfg, trainer)
    if clean_exit.signal is not None:
        _say_how_to_resume(trainer, clean_exit, overrides)
        raise SystemExit(128 + clean_exit.signal)
    return metrics


def speed_options(cfg: DictConfig, trainer: L.Trainer, module: MaskDepthModule) -> None:
    """Set ``module`` up, in place, for the step ``cfg`` asks for: the memory format of ``cfg.channels_last`` on the
    trainer's device (:func:`~fgbg.hardware.use_channels_last`); its net compiled when ``cfg.compile``.

    Converting the weights is enough: a convolution with channels_last weights gives channels_last activations,
    and the layers after it keep them. Only the net is compiled (``nn.Module.compile``: its state dict keeps its
    keys), not the module, whose steps Lightning would then trace with the loss and the metrics. A run config of
    before these options lacks them: it ran contiguous and eager.
    """
    if use_channels_last(cfg.get("channels_last", False), module.net, trainer.strategy.root_device.type):
        module.to(memory_format=torch.channels_last)
    if cfg.get("compile", False):
        module.net.compile()


@rank_zero_only
def _record_config(cfg: DictConfig) -> None:
    """Save the config this run trains with (a resumed run's too: in place of Hydra's copy of the command line's)
    as the run folder's, its data's location made absolute: ``paths`` follow the folder a later command starts
    in, but the data of this run stay where they are. The precision is recorded as this machine resolved it
    (``${fgbg.precision:...}``, fgbg/hardware.py): a resume elsewhere trains on in the same one."""
    recorded = copy.deepcopy(cfg)
    with open_dict(recorded):
        recorded.data.data_dir = str(Path(cfg.data.data_dir).resolve())
        recorded.trainer.precision = cfg.trainer.precision
    save_config(recorded, cfg.paths.output_dir)


def _fit_and_test(
    cfg: DictConfig, trainer: L.Trainer, module, datamodule, clean_exit: CleanExit
) -> tuple[dict[str, float], float]:
    """Fit (with the :func:`speed_options`), then test the best checkpoint when ``cfg.test`` (in contiguous
    memory, as eval.py does); the logged metrics and the fit's seconds.

    A run stopped by a signal returns what it logged before the stop."""
    metrics: dict[str, float] = {}
    started, fit_seconds = time.perf_counter(), None
    try:
        speed_options(cfg, trainer, module)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_seconds = time.perf_counter() - started
        metrics = _logged(trainer)
        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            module.to(memory_format=torch.contiguous_format)  # scored as eval.py scores: NHWC rounds otherwise
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics |= _logged(trainer, "test")
    except SystemExit:
        # How Lightning ends a run stopped by a signal: SIGTERMException, or sys.exit(1) after a Ctrl-C.
        if clean_exit.signal is None:
            raise
        if fit_seconds is None:  # stopped while fitting: what it has logged so far
            metrics = _logged(trainer)
    finally:
        _finish_wandb(trainer)
    return metrics, time.perf_counter() - started if fit_seconds is None else fit_seconds


def _calibrate_and_test(cfg: DictConfig, trainer: L.Trainer, module, datamodule) -> tuple[dict[str, float], float]:
    """In place of fitting: calibrate on the clean validation loader, validate (every validation loader), test
    when ``cfg.test``, as a fitted model is, and save ``last.ckpt``; the logged metrics and the calibration's
    seconds. ``ckpt_path`` only gives the run's config: calibration starts afresh."""
    try:
        seconds = calibrate(cfg, module.net, datamodule)
        trainer.validate(module, datamodule=datamodule)  # also attaches the module, which saving needs
        metrics = _logged(trainer)
        if cfg.get("test"):
            trainer.test(module, datamodule=datamodule)
            metrics |= _logged(trainer, "test")
        trainer.save_checkpoint(last_checkpoint(cfg, trainer))
    finally:
        _finish_wandb(trainer)
    return metrics, seconds


def _write_summary(cfg, trainer: L.Trainer, module, fit_seconds: float, metrics: dict, clean_exit: CleanExit) -> None:
    """``<run>/metrics.json``: the model, its size, the fit's time and steps (:class:`Summary`), and ``metrics``."""
    summary = {
        Summary.MODEL: cfg.model._target_.rsplit(".", 1)[-1],
        Summary.PARAMETERS: sum(p.numel() for p in module.net.parameters()),
        Summary.FIT_SECONDS: round(fit_seconds, 1),
        Summary.STEPS: trainer.global_step,
        Summary.EPOCHS: trainer.current_epoch,
        Summary.TAGS: list(cfg.get("tags") or []),
        **metrics,
    }
    if clean_exit.signal is not None:
        summary[Summary.INTERRUPTED] = clean_exit.signal.name
    (Path(cfg.paths.output_dir) / METRICS_FILE).write_text(json.dumps(summary, indent=1))


def _logged(trainer: L.Trainer, prefix: str = "") -> dict[str, float]:
    """The trainer's last logged metrics whose names start with ``prefix``, as floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def _say_how_to_resume(trainer: L.Trainer, clean_exit: CleanExit, overrides: list[str]) -> None:
    if not trainer.is_global_zero:
        return
    last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    checkpoint = clean_exit.checkpoint or (Path(last) if last and Path(last).exists() else None)
    stopped = f"stopped by {clean_exit.signal.name} at step {trainer.global_step} (epoch {trainer.current_epoch})"
    if checkpoint is None:
        log.warning(f"{stopped}; no checkpoint to resume from: run the same command again")
        return
    log.warning(f"{stopped}; checkpoint {checkpoint}\nresume with:  {_resume_command(checkpoint, overrides)}")


def _resume_command(checkpoint: str | Path, overrides: list[str]) -> str:
    """``python train.py ckpt_path=<checkpoint>`` and this run's ``overrides`` but its ``ckpt_path``, quoted for a
    shell (the overrides are in the run's saved config too; given again, the command also works without it)."""
    kept = [o for o in overrides if override_key(o) != "ckpt_path"]
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
