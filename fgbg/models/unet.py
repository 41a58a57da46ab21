"""A U-Net (segmentation-models-pytorch) on the background, the composite and their difference, stacked channel-wise."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base.initialization import initialize_decoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock
from torch import Tensor

from fgbg.errors import FgbgError, check_choice
from fgbg.models.base import DEPTH_OUTPUTS, MaskDepthNet


class PretrainedWeightsError(FgbgError, RuntimeError):
    """Pretrained encoder weights that are neither in the local cache nor downloadable; the message says how to get them."""


class UNet(MaskDepthNet):
    """``smp.Unet``: an encoder (resnet18 by default) whose features at 1/2 .. 1/32 of the input feed,
    through skip connections, a decoder back to the input's size. Its head, a 3x3 conv with ``mask_channels +
    depth_channels`` outputs, is in effect two heads on the shared decoder: the first ``mask_channels`` maps
    are the mask logits, the rest the depth.

    The background, the composite and (``difference``) the composite minus the background enter stacked
    (``3 * in_channels`` channels) rather than through a shared encoder: the first conv can then compare
    them pixel by pixel, and the encoder runs once instead of twice. The difference is zero, up to JPEG
    noise, wherever nothing was pasted, so it points straight at the foreground.

    smp's last skip is at 1/2 of the input's size, which blurs mask edges at small sizes. ``refine`` adds one
    more smp decoder block at full size whose skip is the input itself: the decoder's output concatenated
    with the raw images (and difference), two 3x3 convs, then the head.

    ``conf/model/unet.yaml`` uses no BatchNorm (GroupNorm in the encoder, none in the decoder): with Adam at
    1e-3 the weights move faster than BatchNorm's running statistics follow, and at 64 x 64 the deepest stages
    are 2 x 2, so evaluation (running statistics) computed another function than training (batch
    statistics); with ``refine`` the held-out mask IoU fell from 0.84 with batch statistics to 0.39 with
    running ones. GroupNorm keeps no running statistics: training and evaluation agree, and a prediction
    does not depend on the rest of its batch. The defaults here are that file's; checkpoints made before these
    options existed get their first layout filled in by ``fgbg.training.module.load_module``.

    Input sides must be multiples of ``2 ** encoder_depth`` (32 by default: 64, 96, 128, 160): each stage then
    halves exactly and the decoder's upsampled features line up pixel for pixel with their skips. smp would
    interpolate other sizes into misaligned skips, so they are rejected.

    Args:
        encoder_name: an smp encoder (``resnet18``, ``mobilenet_v2``, ...) or a timm one as ``tu-<name>``.
        encoder_depth: encoder stages, 3..5; ``decoder_channels`` needs one entry per stage.
        encoder_weights: ``None`` (random initialisation), or pretrained weights: ``"imagenet"`` for smp
            encoders, ``True`` for ``tu-`` encoders (the weights' tag goes in the name, ``tu-resnet18.a1_in1k``).
            They come from the Hugging Face cache, or are downloaded into it. They hold BatchNorm
            statistics: use them with ``encoder_norm=None``.
        decoder_channels: the decoder blocks' widths, deepest first.
        difference: also feed ``composite - background``.
        refine: add the full-size decoder block on the raw inputs (``decoder_channels[-1]`` wide).
        encoder_norm: timm's ``norm_layer`` (``"groupnorm"``, ...) for a ``tu-`` encoder; ``None`` keeps its
            BatchNorm (the only choice for smp's own encoders).
        decoder_norm: smp's ``decoder_use_norm`` for the decoder and ``refine``: ``False`` (none, convs with
            bias) or ``"batchnorm"``.
        depth_output: ``"clamp"`` or the first layout's ``"sigmoid"`` (see :data:`~fgbg.models.base.DEPTH_OUTPUTS`).
            A sigmoid whose input grows large saturates at 1 with a gradient near 0; with an SSIM-only depth loss
            nothing pulls it back, and in some runs the depth head stayed at white from the first epoch on
            (RMSE 0.66, delta1 0). The straight-through clamp bounds the output the same way but passes the
            gradient on, so an L1 term always pulls an out-of-range prediction back.
    """

    def __init__(
        self,
        in_channels: int = 3,
        mask_channels: int = 1,
        depth_channels: int = 1,
        encoder_name: str = "tu-resnet18",
        encoder_depth: int = 5,
        encoder_weights: str | bool | None = None,
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16),
        difference: bool = True,
        refine: bool = True,
        encoder_norm: str | None = "groupnorm",
        decoder_norm: str | bool = False,
        depth_output: str = "clamp",
    ):
        super().__init__()
        self.depth_output = check_choice("model.depth_output", depth_output, DEPTH_OUTPUTS)
        self.mask_channels = mask_channels
        self.multiple = 2**encoder_depth
        self.difference = difference
        inputs = (3 if difference else 2) * in_channels
        self.net = _smp_unet(
            encoder_name=encoder_name,
            encoder_depth=encoder_depth,
            encoder_weights=encoder_weights,
            decoder_channels=tuple(decoder_channels),
            in_channels=inputs,
            classes=mask_channels + depth_channels,
            decoder_use_norm=decoder_norm,
            encoder_norm=encoder_norm,
        )
        self.refine = None
        if refine:
            self.refine = UnetDecoderBlock(decoder_channels[-1], inputs, decoder_channels[-1], use_norm=decoder_norm)
            initialize_decoder(self.refine)  # as smp initialises its own decoder blocks

    def forward(self, background: Tensor, composite: Tensor) -> tuple[Tensor, Tensor]:
        """``background``, ``composite`` ``(B, C, H, W)`` -> ``(mask_logits, depth)``, ``(B, 1, H, W)`` each."""
        height, width = background.shape[-2:]
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"UNet: input size {height}x{width} is not a multiple of {self.multiple} (2 ** encoder_depth); "
                f"use a multiple, e.g. data.image_size={(max(height, width) // self.multiple + 1) * self.multiple}"
            )
        stacked = [background, composite, composite - background] if self.difference else [background, composite]
        x = torch.cat(stacked, dim=1)  # (B, 3C or 2C, H, W)
        decoded = self.net.decoder(self.net.encoder(x))  # (B, decoder_channels[-1], H, W)
        if self.refine is not None:
            decoded = self.refine(decoded, height, width, skip_connection=x)
        out = self.net.segmentation_head(decoded)
        return out[:, : self.mask_channels], out[:, self.mask_channels :]


def _smp_unet(encoder_name: str, encoder_weights: str | bool | None, encoder_norm: str | None, **kwargs) -> smp.Unet:
    """``smp.Unet(encoder_name, encoder_weights, **kwargs)`` with timm's ``norm_layer=encoder_norm`` when set; its
    errors said in terms of the config: a missing download, a norm the encoder cannot take."""
    if encoder_norm and not encoder_name.startswith("tu-"):
        raise ValueError(f"UNet: encoder_norm={encoder_norm!r} needs a timm encoder (tu-<name>), not {encoder_name!r}")
    try:
        return smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            **kwargs,
            **({"norm_layer": encoder_norm} if encoder_norm else {}),
        )
    except OSError as error:  # huggingface_hub's LocalEntryNotFoundError: not cached, no network
        if encoder_weights is None:
            raise
        raise PretrainedWeightsError(_weights_help(encoder_name, encoder_weights, error)) from error
    except TypeError as error:  # timm models that fix their own norm layer refuse norm_layer
        if not encoder_norm or "norm_layer" not in str(error):
            raise
        raise ValueError(
            f"UNet: encoder {encoder_name!r} does not take encoder_norm={encoder_norm!r} ({error}); "
            "set model.encoder_norm=null to keep its own normalisation"
        ) from error


def _weights_help(encoder_name: str, encoder_weights: str | bool, error: OSError) -> str:
    weights = f"encoder_weights={encoder_weights!r}"
    return (
        f"UNet: pretrained weights for encoder {encoder_name!r} ({weights}) are not in the Hugging Face cache "
        f"and could not be downloaded ({type(error).__name__}). On a machine with network, run\n"
        f"  python -c \"import segmentation_models_pytorch as smp; smp.Unet({encoder_name!r}, {weights})\"\n"
        f"and copy its cache (~/.cache/huggingface, or $HF_HOME) to this machine; or train from scratch with "
        f"model.encoder_weights=null. HF_HUB_OFFLINE=1 skips the download attempts (and their retries)."
    )
