"""Held-out metrics of the depth, in the space the data says. What a grey level means depends on how the data was
made, the ``settings.depth`` record of its manifest; :func:`depth_space` reads it into a :class:`DepthSpace`,
which knows its metrics:

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
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError, Metric
from torchmetrics.image import StructuralSimilarityIndexMeasure
from torchmetrics.wrappers import LambdaInputTransformer, MetricInputTransformer

from fgbg.data.checks import DatasetError
from fgbg.training.losses import aligned

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
