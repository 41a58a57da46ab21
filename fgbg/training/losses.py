"""The training loss: named, weighted terms on the mask and on the depth, chosen in ``conf/loss/``.

The source document's criterion is ``2 * BCEWithLogits(mask) + SSIM loss(depth)`` (``conf/loss/document.yaml``);
Dice on the mask, L1 and gradient terms on the depth are one config line away.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
import torch.nn.functional as F
from kornia.losses import ssim_loss
from torch import Tensor, nn

Term = Callable[[Tensor, Tensor], Tensor]

# Laplace smoothing: an image with no foreground, predicted empty, scores 0, and the ratio never divides by 0.
DICE_SMOOTH = 1.0


def dice_loss(logits: Tensor, target: Tensor, smooth: float = DICE_SMOOTH) -> Tensor:
    """Soft Dice loss of mask logits ``(B, C, H, W)`` against a 0/1 target of the same shape -> scalar.

    ``1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)`` with ``p = sigmoid(logits)``, summed
    over each image and then averaged over the batch, so a small foreground counts as much as a large one.
    """
    p, t = torch.sigmoid(logits).flatten(1), target.flatten(1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


def gradient_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``mean|dx(pred) - dx(target)| + mean|dy(pred) - dy(target)|``, forward differences, ``(B, C, H, W)`` -> scalar.

    Differences are linear, so this is the finite-difference gradient of ``pred - target``: blind to a
    constant offset, it scores the edges and slopes of the depth map.
    """
    err = pred - target
    return torch.diff(err, dim=-1).abs().mean() + torch.diff(err, dim=-2).abs().mean()


class MaskDepthLoss(nn.Module):
    """``sum(w * mask term) + sum(w * depth term)``, each term named and weighted in config.

    Args:
        mask_terms: name -> weight, on the mask logits; names: ``bce``, ``dice``.
        depth_terms: name -> weight, on the depth in [0, 1]; names: ``ssim`` (kornia's SSIM loss,
            ``(1 - SSIM) / 2``), ``l1``, ``gradient``.
        ssim_window: the SSIM window's side (the source document's 3).
    """

    def __init__(self, mask_terms: Mapping[str, float], depth_terms: Mapping[str, float], ssim_window: int = 3):
        super().__init__()
        known_mask = {"bce": F.binary_cross_entropy_with_logits, "dice": dice_loss}
        known_depth = {"ssim": partial(ssim_loss, window_size=ssim_window), "l1": F.l1_loss, "gradient": gradient_loss}
        self.mask_terms = _select("mask", mask_terms, known_mask)
        self.depth_terms = _select("depth", depth_terms, known_depth)
        if not self.mask_terms and not self.depth_terms:
            raise ValueError("the loss needs at least one mask or depth term")

    def forward(
        self, mask_logits: Tensor, depth: Tensor, mask_target: Tensor, depth_target: Tensor
    ) -> dict[str, Tensor]:
        """Mask logits, depth and their targets, ``(B, 1, H, W)`` each -> scalars.

        Returns ``loss`` (the total), ``loss_mask`` and ``loss_depth`` (weighted sums), and every term
        unweighted as ``mask/<name>`` and ``depth/<name>``.
        """
        mask_values = {name: fn(mask_logits, mask_target) for name, (fn, _) in self.mask_terms.items()}
        depth_values = {name: fn(depth, depth_target) for name, (fn, _) in self.depth_terms.items()}
        zero = mask_logits.new_zeros(())
        loss_mask = sum((w * mask_values[name] for name, (_, w) in self.mask_terms.items()), zero)
        loss_depth = sum((w * depth_values[name] for name, (_, w) in self.depth_terms.items()), zero)
        return {
            "loss": loss_mask + loss_depth,
            "loss_mask": loss_mask,
            "loss_depth": loss_depth,
            **{f"mask/{name}": value for name, value in mask_values.items()},
            **{f"depth/{name}": value for name, value in depth_values.items()},
        }


def _select(head: str, weights: Mapping[str, float], known: dict[str, Term]) -> dict[str, tuple[Term, float]]:
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ValueError(f"unknown {head} loss term(s) {unknown}; known: {sorted(known)}")
    return {name: (known[name], float(weight)) for name, weight in weights.items()}
