"""The training loss: named, weighted terms on the mask and on the depth, chosen in ``conf/loss/``.

The source document's criterion is ``2 * BCEWithLogits(mask) + SSIM loss(depth)`` (``conf/loss/document.yaml``);
Dice on the mask, L1 and gradient terms on the depth are one config line away. ``conf/loss/matting.yaml`` adds
Dice and a boundary term on the mask, L1 on the depth; ``conf/loss/ssi.yaml`` is for teacher depth, known only
up to a scale and shift per image: MiDaS' scale-and-shift-invariant terms (Ranftl et al., TPAMI 2022).

Data without depth maps trains the mask alone: ``forward(..., depth=None, depth_target=None)`` skips the
depth terms.

The loss is computed in float32 whatever precision the model ran in (:func:`in_float32`): under bf16 autocast
(``trainer.precision=bf16-mixed``) kornia's SSIM convolutions would run in bfloat16, whose 8-bit mantissa
rounds the local variances SSIM divides by, and the sums of BCE and Dice over a batch would lose digits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar

import torch
import torch.nn.functional as F
from kornia.losses import ssim_loss
from torch import Tensor, nn

from fgbg.errors import ConfigError

Term = Callable[[Tensor, Tensor], Tensor]
T = TypeVar("T")

# Laplace smoothing: an image with no foreground, predicted empty, scores 0, and the ratio never divides by 0.
DICE_SMOOTH = 1.0
# boundary_bce's band: pixels within this many px (Chebyshev) of both foreground and background of the target.
EDGE_BAND_PX = 3
# MiDaS' gradient matching: residual gradients at steps 1, 2, 4 and 8 px.
SSI_SCALES = 4
# Below this variance a prediction is flat: the least-squares scale is undefined, taken as 0 (float32 rounding
# leaves ~1e-16 on a constant image; one grey level of spread is ~1e-5).
FLAT_VARIANCE = 1e-10


def in_float32(fn: Callable[..., T], *tensors: Tensor | None) -> T:
    """``fn(*tensors)`` with autocast off on their device and floating tensors as float32 (None passed as is):
    how the loss and the held-out metrics see a model's bf16 outputs. A no-op for float32 inputs without autocast."""
    device = next(t.device.type for t in tensors if t is not None)
    with torch.autocast(device, enabled=False):
        return fn(*(t.float() if t is not None and t.is_floating_point() else t for t in tensors))


def dice_loss(logits: Tensor, target: Tensor, smooth: float = DICE_SMOOTH) -> Tensor:
    """Soft Dice loss of mask logits ``(B, C, H, W)`` against a 0/1 target of the same shape -> scalar.

    ``1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)`` with ``p = sigmoid(logits)``, summed
    over each image and then averaged over the batch, so a small foreground counts as much as a large one.
    """
    p, t = torch.sigmoid(logits).flatten(1), target.flatten(1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


def near(x: Tensor, px: int) -> Tensor:
    """Max of ``x`` ``(B, C, H, W)`` over each pixel's ``(2 px + 1)`` square -> same shape: for a 0/1 map, 1 where
    a 1 lies within ``px`` px (Chebyshev). Pixels outside the image are ignored (max pooling pads with -inf)."""
    return F.max_pool2d(x, 2 * px + 1, stride=1, padding=px)


def edge_band(target: Tensor, px: int) -> Tensor:
    """0/1 ``(B, C, H, W)``: the pixels of a 0/1 target within ``px`` px of both its foreground and its
    background, i.e. both sides of its edges (the image frame is no edge)."""
    fg = (target > 0.5).to(target.dtype)
    return near(fg, px) * near(1 - fg, px)


def boundary_bce(logits: Tensor, target: Tensor, px: int = EDGE_BAND_PX) -> Tensor:
    """BCE with logits over the :func:`edge_band` pixels of the batch only, ``(B, 1, H, W)`` each -> scalar.

    Added to plain BCE it weights the edge up, where a matte is won or lost; 0 for a batch without edges.
    """
    band = edge_band(target, px)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * band).sum() / band.sum().clamp(min=1)


def gradient_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``mean|dx(pred) - dx(target)| + mean|dy(pred) - dy(target)|``, forward differences, ``(B, C, H, W)`` -> scalar.

    Differences are linear, so this is the finite-difference gradient of ``pred - target``: blind to a
    constant offset, it scores the edges and slopes of the depth map.
    """
    err = pred - target
    return torch.diff(err, dim=-1).abs().mean() + torch.diff(err, dim=-2).abs().mean()


def scale_and_shift(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per image, the least-squares ``s, t`` minimising ``sum(valid * (s * pred + t - target)^2)``.

    ``pred``, ``target``, ``valid`` (0/1, None: every pixel) ``(B, 1, H, W)`` -> ``s``, ``t`` ``(B, 1, 1, 1)``.
    Centred moments (``s = cov / var``) rather than the 2x2 normal equations, whose determinant cancels in
    float32. A flat prediction (or no valid pixel) gets ``s = 0``, ``t`` = the target's mean. Differentiable,
    as in MiDaS: the loss's gradient flows through ``s`` and ``t``.
    """
    m = torch.ones_like(pred) if valid is None else valid.to(pred.dtype)
    dims = tuple(range(1, pred.ndim))
    n = m.sum(dims, keepdim=True).clamp(min=1)
    mean_p, mean_t = (m * pred).sum(dims, keepdim=True) / n, (m * target).sum(dims, keepdim=True) / n
    dp, dt = m * (pred - mean_p), m * (target - mean_t)
    var, cov = (dp * dp).sum(dims, keepdim=True) / n, (dp * dt).sum(dims, keepdim=True) / n
    scale = torch.where(var > FLAT_VARIANCE, cov / var.clamp(min=FLAT_VARIANCE), torch.zeros_like(var))
    return scale, mean_t - scale * mean_p


def aligned(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """``pred`` scaled and shifted per image onto ``target`` (:func:`scale_and_shift`), ``(B, 1, H, W)``."""
    scale, shift = scale_and_shift(pred, target, valid)
    return pred * scale + shift


def ssi_loss(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """MiDaS' scale-and-shift-invariant loss: mean ``|aligned(pred) - target|`` over the valid pixels of the
    batch (MiDaS halves it; its weight in config can), ``(B, 1, H, W)`` each -> scalar."""
    m = torch.ones_like(pred) if valid is None else valid.to(pred.dtype)
    return (m * (aligned(pred, target, m) - target).abs()).sum() / m.sum().clamp(min=1)


def ssi_gradient_loss(pred: Tensor, target: Tensor, valid: Tensor | None = None, scales: int = SSI_SCALES) -> Tensor:
    """MiDaS' multi-scale gradient matching on the residual ``aligned(pred) - target``, ``(B, 1, H, W)`` -> scalar.

    At steps ``1, 2, ..., 2**(scales-1)`` px (every step-th pixel), ``sum(|dx r| + |dy r|)`` over pairs of valid
    pixels divided by the valid pixels, summed over the scales: it asks for the target's edges at their place.
    """
    m = torch.ones_like(pred) if valid is None else valid.to(pred.dtype)
    residual = aligned(pred, target, m) - target
    total = pred.new_zeros(())
    for k in range(scales):
        r, v = residual[..., :: 2**k, :: 2**k], m[..., :: 2**k, :: 2**k]
        dx = torch.diff(r, dim=-1).abs() * v[..., 1:] * v[..., :-1]
        dy = torch.diff(r, dim=-2).abs() * v[..., 1:, :] * v[..., :-1, :]
        total = total + (dx.sum() + dy.sum()) / v.sum().clamp(min=1)
    return total


class MaskDepthLoss(nn.Module):
    """``sum(w * mask term) + sum(w * depth term)``, each term named and weighted in config.

    Args:
        mask_terms: name -> weight, on the mask logits; names: ``bce``, ``dice``, ``boundary_bce``
            (BCE within :data:`EDGE_BAND_PX` px of the target's edges).
        depth_terms: name -> weight, on the depth in [0, 1]; names: ``ssim`` (kornia's SSIM loss,
            ``(1 - SSIM) / 2``), ``l1``, ``gradient``, ``ssi`` (:func:`ssi_loss`), ``ssi_gradient``
            (:func:`ssi_gradient_loss`).
        ssim_window: the SSIM window's side (the source document's 3).
    """

    def __init__(self, mask_terms: Mapping[str, float], depth_terms: Mapping[str, float], ssim_window: int = 3):
        super().__init__()
        known_mask = {"bce": F.binary_cross_entropy_with_logits, "dice": dice_loss, "boundary_bce": boundary_bce}
        known_depth = {
            "ssim": partial(ssim_loss, window_size=ssim_window),
            "l1": F.l1_loss,
            "gradient": gradient_loss,
            "ssi": ssi_loss,
            "ssi_gradient": ssi_gradient_loss,
        }
        self.mask_terms = _select("mask", mask_terms, known_mask)
        self.depth_terms = _select("depth", depth_terms, known_depth)
        if not self.mask_terms and not self.depth_terms:
            raise ConfigError("loss.mask_terms and loss.depth_terms are both empty: the loss needs at least one term")

    def forward(
        self, mask_logits: Tensor, depth: Tensor | None, mask_target: Tensor, depth_target: Tensor | None
    ) -> dict[str, Tensor]:
        """Mask logits, depth and their targets, ``(B, 1, H, W)`` each -> scalars.

        Returns ``loss`` (the total), ``loss_mask`` and ``loss_depth`` (weighted sums), and every term
        unweighted as ``mask/<name>`` and ``depth/<name>``, in float32 (:func:`in_float32`). Without depth
        (``depth_target`` None: data without depth maps) the depth terms and ``loss_depth`` are left out and
        ``loss`` is ``loss_mask``.
        """
        return in_float32(self._terms, mask_logits, depth, mask_target, depth_target)

    def _terms(
        self, mask_logits: Tensor, depth: Tensor | None, mask_target: Tensor, depth_target: Tensor | None
    ) -> dict[str, Tensor]:
        zero = mask_logits.new_zeros(())
        mask_values = {name: fn(mask_logits, mask_target) for name, (fn, _) in self.mask_terms.items()}
        loss_mask = sum((w * mask_values[name] for name, (_, w) in self.mask_terms.items()), zero)
        out = {"loss": loss_mask, "loss_mask": loss_mask, **{f"mask/{name}": v for name, v in mask_values.items()}}
        if depth_target is None:
            if not self.mask_terms:
                raise ConfigError("loss.mask_terms is empty but the data has no depth maps: nothing to train")
            return out
        depth_values = {name: fn(depth, depth_target) for name, (fn, _) in self.depth_terms.items()}
        loss_depth = sum((w * depth_values[name] for name, (_, w) in self.depth_terms.items()), zero)
        return {
            **out,
            "loss": loss_mask + loss_depth,
            "loss_depth": loss_depth,
            **{f"depth/{name}": value for name, value in depth_values.items()},
        }


def _select(head: str, weights: Mapping[str, float], known: dict[str, Term]) -> dict[str, tuple[Term, float]]:
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ConfigError(f"loss.{head}_terms: unknown {head} loss term(s) {unknown}; known: {sorted(known)}")
    return {name: (known[name], float(weight)) for name, weight in weights.items()}
