"""What the machine computes fast, for the training step's defaults: its precision and memory format.

``conf/trainer/default.yaml`` sets ``precision: ${fgbg.precision:${.accelerator}}``: ``bf16-mixed`` where the
device that ``trainer.accelerator`` picks computes bfloat16 natively, else ``32-true``. On a CPU with AVX512-BF16
bf16 autocast trains 1.25x (U-Net) to 2x (ConvGen, Net) faster than float32 (bench/cpu_options.py); where
bfloat16 is only emulated (AVX512 without it, GPUs before Ampere) it would be slower, so those keep float32.
``trainer.precision=32-true`` (or any Lightning precision) on the command line still decides; train.py records
the resolved value in the run's config, so a resumed run reads what the run trained with, not what another
machine would pick. eval.py resolves its own (``trainer.precision=32-true`` there scores in float32).

``conf/train.yaml``'s ``channels_last: auto`` (:func:`use_channels_last`) keeps the weights, and so every
activation, in channels_last (NHWC) memory on a CPU for a model without GroupNorm: oneDNN's convolutions are
faster so (beside bf16-mixed: ConvGen +40%, 2.0x -> 2.8x over float32; Net +30%), while torch's CPU GroupNorm
kernels in NHWC cost the U-Net more than its convolutions gain (1.25x -> 1.1x). Not measured on a GPU: off there.

Importing this module registers the resolver (:mod:`fgbg.run_dirs` imports it, with the others).
"""

from __future__ import annotations

import platform

import torch
from omegaconf import OmegaConf
from torch import nn

from fgbg.errors import ConfigError

RESOLVER = "fgbg.precision"
MIXED, FULL = "bf16-mixed", "32-true"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: x86 with AVX512-BF16 (which AMX CPUs also have), or an ARM
    CPU with the BF16 extension (oneDNN's check). oneDNN's check alone would say yes on every AVX512 CPU,
    where it emulates bfloat16 more slowly than float32."""
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return torch.cpu._is_avx512_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def cuda_has_bf16() -> bool:
    """Whether the current GPU computes bfloat16 natively (Ampere and later), not by emulation."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def default_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` if the device of Lightning's ``accelerator`` (``auto``: the GPU when there is one, as
    Lightning picks; ``cpu``; ``gpu`` / ``cuda``) computes bfloat16 natively, else ``32-true`` (``mps``, ``tpu``,
    ... included: not measured)."""
    accelerator = str(accelerator).lower()
    if accelerator == "auto":
        if torch.backends.mps.is_available() and not torch.cuda.is_available():
            return FULL  # Lightning's pick there is the Apple GPU
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        return MIXED if cuda_has_bf16() else FULL
    if accelerator == "cpu":
        return MIXED if cpu_has_bf16() else FULL
    return FULL


def use_channels_last(setting: bool | str, net: nn.Module, device_type: str) -> bool:
    """``channels_last``'s ``setting`` (true, false, or ``auto``: on a CPU, for a ``net`` without GroupNorm)
    for training ``net`` on a ``device_type`` device (``cpu``, ``cuda``, ...)."""
    if setting == "auto":
        return device_type == "cpu" and not any(isinstance(m, nn.GroupNorm) for m in net.modules())
    if isinstance(setting, bool):
        return setting
    raise ConfigError(f"channels_last={setting!r}: use true, false or auto")


if not OmegaConf.has_resolver(RESOLVER):
    # Cached: one config picks once (a sweep's jobs share the choice).
    OmegaConf.register_new_resolver(RESOLVER, default_precision, use_cache=True)
