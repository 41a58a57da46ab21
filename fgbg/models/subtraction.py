"""The background-subtraction baseline: ``mask = max_c |composite - background| > threshold``, nothing learned.

With the plate given, this one-line predictor is the floor every learned model should clear. ``calibrate``
chooses the threshold, and a morphological opening that removes isolated noise pixels, on held-out batches
by pooled IoU; ``train.py model=subtraction`` calls it in place of fitting. The choice lives in buffers, so a
checkpoint carries it and ``load_module`` rebuilds the same predictor. It predicts no depth.

Its inputs are the data's as they are: 3 channels (gray replicated, or RGB) in [0, 1], not normalised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from kornia.morphology import opening
from torch import Tensor

from fgbg.errors import ConfigError, check_int
from fgbg.models.base import MaskDepthNet

# |mask logit| of every pixel: sigmoid(10) ~ 0.99995, and the logged BCE of a wrong pixel stays finite (10).
LOGIT = 10.0

Batch = tuple[Tensor, Tensor, Tensor]  # background, composite (B, C, H, W); mask (B, 1, H, W), 0/1
Scored = tuple[Tensor, Tensor]  # a batch's difference scores (B, 1, H, W) and its foreground (B, 1, H, W), bool


def difference_score(background: Tensor, composite: Tensor) -> Tensor:
    """``(B, C, H, W)`` each -> ``(B, 1, H, W)`` float32: the largest absolute difference over channels."""
    return (composite.float() - background.float()).abs().amax(dim=1, keepdim=True)


def cleaned(foreground: Tensor, size: int) -> Tensor:
    """Boolean masks ``(B, K, H, W)`` opened by a ``size`` x ``size`` square (0: as they are), each channel alone.

    An opening keeps only foreground that holds a whole square, so isolated pixels and thin specks of
    sensor or JPEG noise go; the image border does not erode (kornia's geodesic border).
    """
    if size == 0:
        return foreground
    kernel = torch.ones(size, size, device=foreground.device)
    return opening(foreground.float(), kernel) > 0.5


def pooled_iou(hits: Tensor, false_alarms: Tensor, foreground: Tensor | int) -> Tensor:
    """``TP / (TP + FP + FN)`` = ``TP / (foreground + FP)``, elementwise, float64; 0 where nothing is either."""
    return hits.double() / (foreground + false_alarms).double().clamp(min=1)


class Subtraction(MaskDepthNet):
    """``forward(background, composite)`` -> ``(mask_logits (B, 1, H, W), None)``: ``+LOGIT`` where the opened
    ``difference_score > threshold`` mask is 1, ``-LOGIT`` elsewhere, so ``sigmoid > 0.5`` exactly there.

    Args:
        bins: histogram bins over [0, 1] of the scores; the thresholds tried without clean-up are their edges.
        kernel_sizes: the openings tried, square sides in pixels (0: none; others odd, so the square is centred).
        refine_factors: with an opening, the thresholds tried are these multiples of the best one without.

    Buffers (saved in checkpoints): ``threshold``, ``opening`` (the side chosen, 0 = none) and
    ``calibration_iou``; all three NaN / 0 until :meth:`calibrate`.
    """

    predicts_depth = False

    def __init__(self, bins: int, kernel_sizes: Sequence[int], refine_factors: Sequence[float]):
        super().__init__()
        self.bins = check_int("model.bins", bins, 2)
        self.kernel_sizes = _checked_kernel_sizes(kernel_sizes)
        self.refine_factors = _checked_factors(refine_factors)
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.register_buffer("opening", torch.tensor(0))
        self.register_buffer("calibration_iou", torch.tensor(float("nan")))

    def forward(self, background: Tensor, composite: Tensor) -> tuple[Tensor, None]:
        """``(B, C, H, W)`` each -> ``(mask_logits (B, 1, H, W), None)``, logits in the inputs' dtype."""
        if torch.isnan(self.threshold):
            raise RuntimeError("Subtraction has no threshold yet: calibrate() it (train.py model=subtraction does)")
        foreground = cleaned(difference_score(background, composite) > self.threshold, int(self.opening))
        return foreground.to(background.dtype) * (2 * LOGIT) - LOGIT, None

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Batch]) -> float:
        """Choose ``threshold`` and ``opening`` maximising pooled IoU over ``batches``; returns that IoU.

        Without clean-up, one histogram of the scores of foreground and of background pixels gives the IoU
        of every bin edge at once (suffix sums); with an opening, each ``refine_factors`` multiple of that
        best edge is scored in a second pass, all at once per batch. Ties keep the smaller opening, and,
        among edges, the middle one of those that tie. ``batches`` is read once: both passes work on the
        scores and masks kept from it (one float and one bool a pixel), not on the decoded images again.
        """
        scored = [(difference_score(background, composite), mask > 0.5) for background, composite, mask in batches]
        edges = torch.linspace(0, 1, self.bins + 1, dtype=torch.float32)
        hits, false_alarms, foreground = _edge_counts(scored, edges)
        iou = pooled_iou(hits, false_alarms, foreground)
        best = torch.nonzero(iou == iou.max()).flatten()
        threshold, size, best_iou = float(edges[best[len(best) // 2]]), 0, float(iou.max())
        if 0 not in self.kernel_sizes:
            best_iou = -1.0  # the plain threshold is not a candidate: it only centres the grid
        candidates = (torch.tensor(self.refine_factors, dtype=torch.float32) * threshold).clamp(0, 1)
        openings = [k for k in self.kernel_sizes if k]
        if openings:
            opened_iou = _opened_iou(scored, candidates, openings)  # (openings, candidates)
            for i, k in enumerate(openings):
                j = int(opened_iou[i].argmax())
                if float(opened_iou[i, j]) > best_iou:
                    threshold, size, best_iou = float(candidates[j]), k, float(opened_iou[i, j])
        self.threshold.fill_(threshold)
        self.opening.fill_(size)
        self.calibration_iou.fill_(best_iou)
        return best_iou

    def describe(self) -> str:
        """One line: ``subtraction: threshold 0.083, opening 3 px, calibration IoU 0.912``."""
        clean_up = f"opening {int(self.opening)} px" if int(self.opening) else "no opening"
        return (
            f"subtraction: threshold {float(self.threshold):.3f}, {clean_up}, "
            f"calibration IoU {float(self.calibration_iou):.3f}"
        )


def _edge_counts(scored: list[Scored], edges: Tensor) -> tuple[Tensor, Tensor, int]:
    """For each edge ``e`` (``(E,)``): foreground and background pixels scoring ``> e`` (``(E,)`` each, int64),
    and the number of foreground pixels, over all ``scored`` batches.

    ``torch.bucketize`` counts the edges below each score, with the very comparison ``forward`` makes
    (``score > threshold``, float32), so an edge's IoU here is the IoU of that threshold exactly.
    """
    per_bucket = torch.zeros(2, len(edges) + 1, dtype=torch.int64)  # background, foreground
    for score, fg in scored:
        buckets = torch.bucketize(score, edges.to(score.device))  # (B, 1, H, W): how many edges lie below
        per_bucket[0] += torch.bincount(buckets[~fg], minlength=len(edges) + 1).cpu()
        per_bucket[1] += torch.bincount(buckets[fg], minlength=len(edges) + 1).cpu()
    if not per_bucket.any():
        raise ValueError("calibrate: the batches hold no pixels")
    # Above edge k: buckets k + 1 and up (suffix sums).
    above = per_bucket.flip(1).cumsum(1).flip(1)[:, 1:]
    return above[1], above[0], int(per_bucket[1].sum())


def _opened_iou(scored: list[Scored], thresholds: Tensor, sizes: list[int]) -> Tensor:
    """Pooled IoU ``(len(sizes), T)`` of each opening side in ``sizes`` after each of ``thresholds`` ``(T,)``."""
    hits = torch.zeros(len(sizes), len(thresholds), dtype=torch.int64)
    false_alarms = torch.zeros_like(hits)
    foreground = 0
    for score, fg in scored:
        above = score > thresholds.to(score.device).view(1, -1, 1, 1)  # (B, T, H, W): every candidate at once
        for i, size in enumerate(sizes):
            predicted = cleaned(above, size)
            hits[i] += (predicted & fg).sum(dim=(0, 2, 3)).cpu()
            false_alarms[i] += (predicted & ~fg).sum(dim=(0, 2, 3)).cpu()
        foreground += int(fg.sum())
    return pooled_iou(hits, false_alarms, foreground)


def _checked_kernel_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(check_int("model.kernel_sizes", size, 0) for size in sizes)
    if not sizes or any(size and (size < 3 or size % 2 == 0) for size in sizes):
        raise ConfigError(f"model.kernel_sizes={list(sizes)}: expected a list of 0 (no opening) or odd sides >= 3")
    return sizes


def _checked_factors(factors: Sequence[float]) -> tuple[float, ...]:
    factors = tuple(factors)
    if not factors or any(isinstance(f, bool) or not isinstance(f, int | float) or f <= 0 for f in factors):
        raise ConfigError(f"model.refine_factors={list(factors)}: expected a list of positive numbers")
    return tuple(float(f) for f in factors)
