"""Loggers that work without an account: wandb runs offline unless the user is logged in."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def wandb_mode(requested: str = "auto") -> str:
    """``auto`` -> ``online`` when wandb credentials are present (WANDB_API_KEY or ``wandb login``), else ``offline``.

    ``WANDB_MODE`` in the environment wins over everything, as in wandb itself.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        logged_in = netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        logged_in = False
    return "online" if logged_in else "offline"


def _run_name(save_dir: str) -> str:
    """The run folder's name, followed in a sweep by the job's overrides (``model=net,data.strategy=4k``)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""
    return f"{Path(save_dir).name} {overrides}".strip()


def wandb_logger(save_dir: str, mode: str = "auto", name: str | None = None, **kwargs) -> WandbLogger:
    """A :class:`WandbLogger` writing under ``save_dir``, named after that folder (and a sweep job's overrides)."""
    # wandb.init's own ``mode``, not WandbLogger(offline=True), which would set WANDB_MODE for the whole process.
    logger = WandbLogger(save_dir=save_dir, name=name or _run_name(save_dir), mode=wandb_mode(mode), **kwargs)
    # Lightning always passes wandb.init ``anonymous``, which wandb then says has no effect, on stderr, every run.
    logger._wandb_init.pop("anonymous", None)
    return logger
