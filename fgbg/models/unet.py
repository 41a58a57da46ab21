"""A U-Net (segmentation-models-pytorch) on the background and the composite stacked channel-wise."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn


class PretrainedWeightsError(RuntimeError):
    """Pretrained encoder weights that are neither in the local cache nor downloadable; the message says how to get them."""


class UNet(nn.Module):
    """``smp.Unet``: an encoder (resnet18 by default) whose features at 1/2 .. 1/32 of the input feed, through
    skip connections, a decoder back to the input's size. Its head, a 3x3 conv with ``mask_channels +
    depth_channels`` outputs, is in effect two heads on the shared decoder: the first ``mask_channels`` maps
    are the mask logits, the rest the depth.

    The background and the composite enter stacked (``2 * in_channels`` channels) rather than through a shared
    encoder: the first conv can then compare them pixel by pixel, which is what finding the pasted
    foreground takes, and the encoder runs once instead of twice.

    Input sides must be multiples of ``2 ** encoder_depth`` (32 by default: 64, 96, 128, 160): each stage then
    halves exactly and the decoder's upsampled features line up pixel for pixel with their skips. smp would
    interpolate other sizes into misaligned skips, so they are rejected.

    Args:
        encoder_name: an smp encoder (``resnet18``, ``mobilenet_v2``, ...) or a timm one as ``tu-<name>``.
        encoder_depth: encoder stages, 3..5; ``decoder_channels`` needs one entry per stage.
        encoder_weights: ``None`` (random initialisation), or pretrained weights: ``"imagenet"`` for smp
            encoders, ``True`` for ``tu-`` encoders (the weights' tag goes in the name, ``tu-resnet18.a1_in1k``).
            They come from the Hugging Face cache, or are downloaded into it.
        decoder_channels: the decoder blocks' widths, deepest first.
    """

    def __init__(
        self,
        in_channels: int = 3,
        mask_channels: int = 1,
        depth_channels: int = 1,
        encoder_name: str = "resnet18",
        encoder_depth: int = 5,
        encoder_weights: str | bool | None = None,
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16),
    ):
        super().__init__()
        self.mask_channels = mask_channels
        self.multiple = 2**encoder_depth
        try:
            self.net = smp.Unet(
                encoder_name=encoder_name,
                encoder_depth=encoder_depth,
                encoder_weights=encoder_weights,
                decoder_channels=tuple(decoder_channels),
                in_channels=2 * in_channels,
                classes=mask_channels + depth_channels,
            )
        except OSError as error:  # huggingface_hub's LocalEntryNotFoundError: not cached, no network
            if encoder_weights is None:
                raise
            raise PretrainedWeightsError(_weights_help(encoder_name, encoder_weights, error)) from error

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``bg_image``, ``fg_bg_image`` ``(B, C, H, W)`` -> ``(mask_logits, depth)``, ``(B, 1, H, W)`` each."""
        bg, fg_bg = batch["bg_image"], batch["fg_bg_image"]
        height, width = bg.shape[-2:]
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"UNet: input size {height}x{width} is not a multiple of {self.multiple} (2 ** encoder_depth); "
                f"use a multiple, e.g. data.image_size={(max(height, width) // self.multiple + 1) * self.multiple}"
            )
        out = self.net(torch.cat([bg, fg_bg], dim=1))
        return out[:, : self.mask_channels], out[:, self.mask_channels :]


def _weights_help(encoder_name: str, encoder_weights: str | bool, error: OSError) -> str:
    weights = f"encoder_weights={encoder_weights!r}"
    return (
        f"UNet: pretrained weights for encoder {encoder_name!r} ({weights}) are not in the Hugging Face cache "
        f"and could not be downloaded ({type(error).__name__}). On a machine with network, run\n"
        f"  python -c \"import segmentation_models_pytorch as smp; smp.Unet({encoder_name!r}, {weights})\"\n"
        f"and copy its cache (~/.cache/huggingface, or $HF_HOME) to this machine; or train from scratch with "
        f"model.encoder_weights=null. HF_HUB_OFFLINE=1 skips the download attempts (and their retries)."
    )
