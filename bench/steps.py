"""The benches' training step: train.py's, forward + loss under Lightning's precision plugin, backward, the
optimizer's step, on a copy of the module with its own optimizer, in a way of running it (:class:`Option`)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.training.module import MaskDepthModule


@dataclass(frozen=True)
class Option:
    """A way to run the step; the defaults are float32, contiguous, eager, torch's threads."""

    name: str
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None  # intra-op threads; None: torch's default


class Stepper:
    """One copy of ``module`` with its own optimizer, stepping under ``option`` on ``device``.

    channels_last converts the weights only, as train.py does: the activations follow them.
    """

    def __init__(self, module: MaskDepthModule, option: Option, device: torch.device):
        self.option, self.device = option, device
        self.module = copy.deepcopy(module).to(device)
        if option.channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.optimizer = self.module.configure_optimizers()["optimizer"]
        self.forward = torch.compile(self.module) if option.compile else self.module
        mixed = option.precision == "bf16-mixed"
        self.precision: Precision = MixedPrecision("bf16-mixed", device.type) if mixed else Precision()
        self.module.train()

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One training step on ``batch`` (the batch contract's keys, on any device); its seconds."""
        default_threads = torch.get_num_threads()
        if self.option.threads:
            torch.set_num_threads(self.option.threads)
        start = time.perf_counter()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with self.precision.forward_context():
            mask_logits, depth = self.forward(batch[BACKGROUND], batch[COMPOSITE])
            loss = self.module.loss(mask_logits, depth, batch[MASK], batch[DEPTH])["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        torch.set_num_threads(default_threads)
        return seconds
