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

Depth: what a grey level means depends on how the data was made, the ``settings.depth`` record of its
manifest; :func:`depth_space` reads it into a :class:`DepthSpace`, which knows its metrics:

- every space: ``depth_rmse``, ``depth_mae`` on the [0, 1] maps, ``depth_ssim`` (Gaussian window 11, sigma
  1.5: the standard SSIM, not the loss's 3x3 window; it needs images of at least 6 x 6 pixels) and
  ``depth_spread``, the standard deviation of the predicted map over all pixels of the epoch (near 0: the
  prediction went flat).
- :class:`GreyLevels` (no record: what the levels mean is unknown) and :class:`RelativeDisparity` (teacher
  labels, disparity min-max normalised per image): ``depth_abs_rel`` and ``depth_delta1`` on the grey levels;
  the relative one adds ``depth_abs_rel_aligned`` and ``depth_delta1_aligned`` after per-image least-squares
  scale and shift of the prediction onto the target in disparity space (MiDaS' protocol, Ranftl et al.).
- :class:`MetricDepth` (scene depth, log-encoded metres): ``depth_abs_rel``, ``depth_delta1`` and
  ``depth_rmse_m`` on metres.

Every state is summed across batches and processes, so no value depends on how the data is batched.

The grey targets are 8-bit, brighter = nearer: the farthest surfaces are stored as 0, where the ratio
metrics on grey levels divide by zero. They read values below one grey level as one grey level
(``DEPTH_FLOOR``), prediction and target alike: an 8-bit map cannot tell them apart.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
from torchmetrics.wrappers import LambdaInputTransformer, MetricInputTransformer

from fgbg.data.checks import DatasetError
from fgbg.training.losses import aligned, near

# The smallest non-zero level of an 8-bit depth map.
DEPTH_FLOOR = 1 / 255
# Cheng et al.'s band and the boundary F tolerance, in pixels.
BOUNDARY_PX = 2


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


class DepthSpread(Metric):
    """Standard deviation of the predicted depth over every pixel of the epoch (the target is ignored).

    float64 sums: with float32, ``E[x^2] - E[x]^2`` of a flat map over millions of pixels is rounding noise.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("squares", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor | None = None) -> None:
        """``preds``: any shape, e.g. ``(B, 1, H, W)``."""
        x = preds.detach().double()
        self.total += x.sum()
        self.squares += (x * x).sum()
        self.count += x.numel()

    def compute(self) -> Tensor:
        mean = self.total / self.count
        return (self.squares / self.count - mean * mean).clamp(min=0).sqrt().float()


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


class Aligned(MetricInputTransformer):
    """The wrapped metric of each image's prediction scaled and shifted onto its target by least squares
    (:func:`fgbg.training.losses.aligned`); ``preds``, ``target`` ``(B, 1, H, W)``. The wrapped metric keeps
    the states (and syncs them)."""

    def _wrap_transform(self, *args: Tensor) -> tuple[Tensor, ...]:
        preds, target, *rest = args
        return aligned(preds, target), target, *rest


def _common_metrics() -> dict[str, Metric]:
    """The metrics of the [0, 1] maps themselves, whatever they mean."""
    return {
        "depth_rmse": MeanSquaredError(squared=False),
        "depth_mae": MeanAbsoluteError(),
        "depth_ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        "depth_spread": DepthSpread(),
    }


class DepthSpace(abc.ABC):
    """What a depth map's grey levels in [0, 1] mean, and so which metrics measure it."""

    @abc.abstractmethod
    def metrics(self) -> dict[str, Metric]:
        """Name -> a fresh metric of ``(pred, target)`` grey maps ``(B, 1, H, W)``."""


@dataclass(frozen=True)
class GreyLevels(DepthSpace):
    """Levels of unknown meaning (data without a manifest): the raw metrics on the levels only."""

    def metrics(self) -> dict[str, Metric]:
        return {**_common_metrics(), "depth_abs_rel": AbsRel(), "depth_delta1": DeltaAccuracy(threshold=1.25)}


@dataclass(frozen=True)
class RelativeDisparity(DepthSpace):
    """Teacher labels: disparity normalised per image to [0, 1], known up to a scale and shift per image."""

    def metrics(self) -> dict[str, Metric]:
        return {
            **GreyLevels().metrics(),
            "depth_abs_rel_aligned": Aligned(AbsRel()),
            "depth_delta1_aligned": Aligned(DeltaAccuracy(threshold=1.25)),
        }


@dataclass(frozen=True)
class MetricDepth(DepthSpace):
    """Scene depth: grey ``g = log(z_far / z) / log(z_far / z_near)``, so ``z = z_far * (z_near / z_far)**g`` m
    (``fgbg.build.scene_depth.SceneDepth``)."""

    z_near: float
    z_far: float

    def __post_init__(self):
        if not 0 < self.z_near < self.z_far:
            raise DatasetError(f"settings.depth: z_near {self.z_near} and z_far {self.z_far} need 0 < z_near < z_far")

    def to_metres(self, grey: Tensor) -> Tensor:
        """Grey levels (clamped to [0, 1]) -> metres in [z_near, z_far], same shape."""
        return self.z_far * (self.z_near / self.z_far) ** grey.clamp(0, 1)

    def metrics(self) -> dict[str, Metric]:
        def metres(metric: Metric) -> Metric:
            return LambdaInputTransformer(metric, transform_pred=self.to_metres, transform_target=self.to_metres)

        # Metres never fall below z_near: the floor changes nothing, it only replaces the grey-level one.
        return {
            **_common_metrics(),
            "depth_abs_rel": metres(AbsRel(floor=self.z_near)),
            "depth_delta1": metres(DeltaAccuracy(threshold=1.25, floor=self.z_near)),
            "depth_rmse_m": metres(MeanSquaredError(squared=False)),
        }


GREY_LEVELS = GreyLevels()


def depth_space(record: dict | None) -> DepthSpace:
    """The depth space of data whose manifests record ``settings.depth`` = ``record``.

    A None record (zips without a manifest: their maps hold depth of unknown meaning) -> :data:`GREY_LEVELS`;
    mask-only data has no depth space (``MaskDepthMetrics(..., with_depth=False)``). Raises
    :class:`~fgbg.data.checks.DatasetError` for a record of another source or without its fields.
    """
    if record is None:
        return GREY_LEVELS
    source = record.get("source")
    if source == "teacher":
        return RelativeDisparity()
    if source == "scene":
        try:
            z_near, z_far = float(record["z_near"]), float(record["z_far"])
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"settings.depth {record}: a scene record needs numbers z_near and z_far") from error
        return MetricDepth(z_near, z_far)
    raise DatasetError(f"settings.depth: unknown source {source!r} (expected scene or teacher)")


class MaskDepthMetrics(nn.Module):
    """One stage's metrics, logged as ``<prefix>mask_iou``, ``<prefix>depth_rmse``, ...

    ``mask`` and ``depth`` are :class:`MetricCollection` s (they take different inputs), which
    ``LightningModule.log_dict`` accepts as they are: Lightning then computes and resets them per epoch.

    Args:
        prefix: put before every name (``val/``).
        space: the data's :func:`depth_space`; None: :data:`GREY_LEVELS`.
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
