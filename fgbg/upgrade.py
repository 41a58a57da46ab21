"""Configs saved by earlier versions, as this version reads them: a checkpoint's hyperparameters and a run
folder's ``.hydra/config.yaml`` name classes where they were then and lack keys added since.
"""

from __future__ import annotations

# Where a class has moved, the old ``_target_`` prefix maps to the new one.
MOVED_TARGETS = {
    "fgbg.losses.": "fgbg.training.losses.",
    "fgbg.callbacks.": "fgbg.training.callbacks.",
    "fgbg.loggers.": "fgbg.training.loggers.",
}
# The U-Net's first layout (stacked background and composite, smp's encoder with BatchNorm): what a model made
# before these options existed was built with, and does not record.
UNET_TARGET = "fgbg.models.unet.UNet"
UNET_FIRST_LAYOUT = {
    "difference": False,
    "refine": False,
    "encoder_norm": None,
    "decoder_norm": "batchnorm",
    "depth_output": "sigmoid",
}

# The data settings of runs made before plate perturbations existed.
PERTURBATIONS_BEFORE = {"perturbation": None, "augment": False, "perturbed_eval": False, "perturbation_seed": 0}


def moved_targets(config):
    """``config`` (plain containers) with the ``_target_`` of moved classes rewritten to their new place."""
    if isinstance(config, dict):
        return {key: moved_targets(value) for key, value in config.items()}
    if isinstance(config, list):
        return [moved_targets(value) for value in config]
    if isinstance(config, str):
        for old, new in MOVED_TARGETS.items():
            if config.startswith(old):
                return new + config[len(old) :]
    return config


def upgraded_model(model: dict) -> dict:
    """A ``model`` group as saved, with the U-Net's first layout filled in where it records none."""
    return {**UNET_FIRST_LAYOUT, **model} if model.get("_target_") == UNET_TARGET else model


def upgraded_run_config(saved: dict) -> dict:
    """A run folder's saved config (plain containers, interpolations unresolved) as this version composes it."""
    saved = moved_targets(saved)
    if isinstance(saved.get("model"), dict):
        saved["model"] = upgraded_model(saved["model"])
    if isinstance(saved.get("data"), dict):
        saved["data"].setdefault("seed", "${seed}")  # the training order's seed, a data setting since 2026-12
        # Plate perturbations (2026-12): such runs trained without them; their held-out scores were clean only.
        for key, value in PERTURBATIONS_BEFORE.items():
            saved["data"].setdefault(key, value)
    return saved
