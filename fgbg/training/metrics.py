"""Held-out metrics of the mask and the depth, as torchmetrics objects that accumulate over an epoch.

Mask: IoU (``BinaryJaccardIndex``) and Dice (``BinaryF1Score``: Dice is F1 on pixels) of
``sigmoid(logits) > 0.5`` against the 0/1 target. Depth, in [0, 1] like its target: RMSE, MAE, abs rel,
delta < 1.25 and SSIM (Gaussian window 11, sigma 1.5: the standard SSIM, not the loss's 3x3 window;
its padding needs images of at least 6 x 6 pixels).

Every metric pools all pixels of the epoch (a large foreground counts more than a small one), and its
state is summed across batches and processes, so the value does not depend on how the data is batched.

The depth targets are 8-bit, brighter = nearer: the farthest surfaces are stored as 0, where the ratio
metrics (abs rel, delta) divide by zero. Both ratio metrics read values below one grey level as one grey
level (``DEPTH_FLOOR``), prediction and target alike: an 8-bit map cannot tell them apart.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import (
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    Metric,
    MetricCollection,
)
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex
from torchmetrics.image import StructuralSimilarityIndexMeasure

# The smallest non-zero level of an 8-bit depth map.
DEPTH_FLOOR = 1 / 255


class AbsRel(MeanAbsolutePercentageError):
    """Abs rel, ``mean(|pred - target| / target)``, over pixels floored at ``floor``.

    torchmetrics' MAPE is exactly abs rel (``|p - t| / max(|t|, eps)``); its own ``eps`` (1e-6) would
    turn an 8-bit target of 0 into errors near 1e6, hence the floor.
    """

    def __init__(self, floor: float = DEPTH_FLOOR, **kwargs):
        super().__init__(**kwargs)
        self.floor = floor

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds.clamp(min=self.floor), target.clamp(min=self.floor))


class DeltaAccuracy(Metric):
    """Fraction of pixels with ``max(pred / target, target / pred) < threshold`` (delta1 for 1.25).

    Pixel counts are integer states summed over batches and processes; values are floored at ``floor``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float = 1.25, floor: float = DEPTH_FLOOR, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.floor = threshold, floor
        self.add_state("hits", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds``, ``target``: the same shape, e.g. ``(B, 1, H, W)``, in [0, 1]."""
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
        p, t = preds.clamp(min=self.floor), target.clamp(min=self.floor)
        ratio = torch.maximum(p / t, t / p)
        self.hits += (ratio < self.threshold).sum()
        self.total += ratio.numel()

    def compute(self) -> Tensor:
        return self.hits.float() / self.total


class MaskDepthMetrics(nn.Module):
    """One stage's metrics, logged as ``<prefix>mask_iou``, ``<prefix>depth_rmse``, ...

    ``mask`` and ``depth`` are :class:`MetricCollection` s (they take different inputs), which
    ``LightningModule.log_dict`` accepts as they are: Lightning then computes and resets them per epoch.
    """

    def __init__(self, prefix: str = ""):
        super().__init__()
        # compute_groups=False: each metric keeps its own state, so logging them one by one stays correct.
        self.mask = MetricCollection(
            {"mask_iou": BinaryJaccardIndex(threshold=0.5), "mask_dice": BinaryF1Score(threshold=0.5)},
            prefix=prefix,
            compute_groups=False,
        )
        self.depth = MetricCollection(
            {
                "depth_rmse": MeanSquaredError(squared=False),
                "depth_mae": MeanAbsoluteError(),
                "depth_abs_rel": AbsRel(),
                "depth_delta1": DeltaAccuracy(threshold=1.25),
                "depth_ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            },
            prefix=prefix,
            compute_groups=False,
        )

    def update(self, mask_logits: Tensor, depth: Tensor, mask_target: Tensor, depth_target: Tensor) -> None:
        """Mask logits and depth in [0, 1], 0/1 mask and depth targets in [0, 1], ``(B, 1, H, W)`` each."""
        self.mask.update(torch.sigmoid(mask_logits), mask_target.long())
        self.depth.update(depth, depth_target)

    def compute(self) -> dict[str, Tensor]:
        return {**self.mask.compute(), **self.depth.compute()}
