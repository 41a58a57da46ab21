"""Held-out metrics of the mask and the depth, as torchmetrics objects that accumulate over an epoch.

Mask, on ``sigmoid(logits) > 0.5`` against the 0/1 target:

- ``mask_iou`` (``BinaryJaccardIndex``) and ``mask_dice`` (``BinaryF1Score``: Dice is F1 on pixels) pool
  all pixels of the epoch: a large foreground counts more than a small one.
- ``mask_iou_per_image``: the mean over images of each image's IoU, an empty target predicted empty
  counting as 1 (torchmetrics' ``MeanIoU`` skips such images instead, so it is not used).
- ``mask_boundary_iou``: Boundary IoU (Cheng et al., CVPR 2021), the IoU of the pixels within 2 px inside
  each mask's contour (outside the image counts as background, as in the paper's code), pooled.
- ``mask_boundary_f``: boundary F-measure (Martin et al.; DAVIS' F): precision and recall of the 1-px
  contours, each contour pixel matched within 2 px (Chebyshev) of the other's, pooled.

Depth: in the space the data's manifest says (:mod:`fgbg.training.depth_metrics`).

Every state is summed across batches and processes, so no value depends on how the data is batched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex

from fgbg.training.depth_metrics import GREY_LEVELS, DepthSpace
from fgbg.training.losses import near

# Cheng et al.'s band and the boundary F tolerance, in pixels.
BOUNDARY_PX = 2


class _MaskMetric(Metric):
    """A mask metric of probabilities (or 0/1) ``preds`` and a 0/1 ``target``, ``(B, 1, H, W)`` each."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold

    def _binary(self, preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """0/1 float maps, the prediction thresholded as ``BinaryJaccardIndex`` does (``preds > threshold``)."""
        if preds.shape != target.shape or preds.ndim != 4:
            raise ValueError(f"expected preds and target (B, 1, H, W), got {tuple(preds.shape)}, {tuple(target.shape)}")
        return (preds > self.threshold).float(), (target > 0.5).float()


class PerImageIoU(_MaskMetric):
    """Mean over images of each image's IoU; an image with empty target and prediction scores 1."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("scores", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        p, t = self._binary(preds, target)
        inter, union = (p * t).sum((1, 2, 3)), torch.maximum(p, t).sum((1, 2, 3))
        self.scores += torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).double().sum()
        self.images += p.shape[0]

    def compute(self) -> Tensor:
        return (self.scores / self.images).float()


def inner_band(mask: Tensor, px: int) -> Tensor:
    """Cheng et al.'s boundary region of a 0/1 mask ``(B, 1, H, W)``: its pixels within ``px`` px (Chebyshev)
    of a background pixel, outside the image counting as background -> 0/1, same shape."""
    background = F.pad(1 - mask, (px, px, px, px), value=1.0)
    return mask * F.max_pool2d(background, 2 * px + 1, stride=1)


class BoundaryIoU(_MaskMetric):
    """Boundary IoU: ``|Gd & Pd| / |Gd | Pd|`` of the :func:`inner_band` s, pooled; 1 when both are empty."""

    def __init__(self, px: int = BOUNDARY_PX, **kwargs):
        super().__init__(**kwargs)
        self.px = px
        self.add_state("inter", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("union", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        p, t = (inner_band(m, self.px) for m in self._binary(preds, target))
        self.inter += (p * t).sum().long()
        self.union += torch.maximum(p, t).sum().long()

    def compute(self) -> Tensor:
        return self.inter.float() / self.union if self.union > 0 else torch.tensor(1.0, device=self.inter.device)


class BoundaryF(_MaskMetric):
    """Boundary F-measure: ``2PR / (P + R)`` of the 1-px contours (mask pixels next to background, the image
    frame is no contour), P: prediction contour pixels within ``px`` px of the target's, R: the converse;
    pooled. 1 when neither has a contour, 0 when only one has."""

    def __init__(self, px: int = BOUNDARY_PX, **kwargs):
        super().__init__(**kwargs)
        self.px = px
        for name in ("pred_hits", "pred_total", "target_hits", "target_total"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        p, t = (m * near(1 - m, 1) for m in self._binary(preds, target))
        self.pred_hits += (p * near(t, self.px)).sum().long()
        self.pred_total += p.sum().long()
        self.target_hits += (t * near(p, self.px)).sum().long()
        self.target_total += t.sum().long()

    def compute(self) -> Tensor:
        precision = self.pred_hits / self.pred_total if self.pred_total > 0 else 1.0
        recall = self.target_hits / self.target_total if self.target_total > 0 else 1.0
        f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return torch.as_tensor(f, dtype=torch.float32, device=self.pred_hits.device)


class MaskDepthMetrics(nn.Module):
    """One stage's metrics, logged as ``<prefix>mask_iou``, ``<prefix>depth_rmse``, ...

    ``mask`` and ``depth`` are :class:`MetricCollection` s (they take different inputs), which
    ``LightningModule.log_dict`` accepts as they are: Lightning then computes and resets them per epoch.

    Args:
        prefix: put before every name (``val/``).
        space: the data's :func:`~fgbg.training.depth_metrics.depth_space`; None: its ``GREY_LEVELS``.
        with_depth: False (mask-only data): ``depth`` is None and ``update`` ignores its depth arguments.
    """

    def __init__(self, prefix: str = "", space: DepthSpace | None = None, with_depth: bool = True):
        super().__init__()
        # compute_groups=False: each metric keeps its own state, so logging them one by one stays correct.
        self.mask = MetricCollection(
            {
                "mask_iou": BinaryJaccardIndex(threshold=0.5),
                "mask_dice": BinaryF1Score(threshold=0.5),
                "mask_iou_per_image": PerImageIoU(threshold=0.5),
                "mask_boundary_iou": BoundaryIoU(),
                "mask_boundary_f": BoundaryF(),
            },
            prefix=prefix,
            compute_groups=False,
        )
        space = GREY_LEVELS if space is None else space
        self.depth = MetricCollection(space.metrics(), prefix=prefix, compute_groups=False) if with_depth else None

    def collections(self) -> list[MetricCollection]:
        """``mask``, then ``depth`` if there is one: what the module passes to ``log_dict``."""
        return [self.mask] if self.depth is None else [self.mask, self.depth]

    def update(
        self, mask_logits: Tensor, depth: Tensor | None, mask_target: Tensor, depth_target: Tensor | None
    ) -> None:
        """Mask logits and depth in [0, 1], 0/1 mask and depth targets in [0, 1], ``(B, 1, H, W)`` each."""
        self.mask.update(torch.sigmoid(mask_logits), mask_target.long())
        if self.depth is not None:
            if depth is None or depth_target is None:
                raise ValueError("these metrics measure depth: pass depth and depth_target")
            self.depth.update(depth, depth_target)

    def compute(self) -> dict[str, Tensor]:
        return {**self.mask.compute(), **(self.depth.compute() if self.depth is not None else {})}
