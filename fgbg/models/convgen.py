"""The source document's Model2 (``ConvGen``): a small shared encoder per image and one joint head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fgbg.models.base import MaskDepthNet


class ConvGen(MaskDepthNet):
    """Model2, layer for layer as the source document gives it; every conv keeps the input's size.

    ``convblock1`` (32) and ``convblock2`` (depthwise 3x3, pointwise to 64) are shared by the background
    and the composite; their features are concatenated (128) -> ``convblock3`` (256) -> ``convblock4``.

    Mended: the document's ``convblock4`` outputs 3 channels and ``forward`` returns that one tensor,
    while its training loop reads ``output[0]`` as the mask and ``output[1]`` as the depth, which indexes
    the batch dimension instead (one sample's 3-channel map against the whole batch's targets). Here
    ``convblock4`` outputs ``mask_channels + depth_channels`` channels: channels ``[:mask_channels]`` are
    the mask logits, the remaining ``depth_channels`` the depth. Modules are nested as in the document,
    so state-dict keys match its.
    """

    def __init__(self, in_channels: int = 3, mask_channels: int = 1, depth_channels: int = 1):
        super().__init__()
        self.mask_channels = mask_channels
        self.convblock1 = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.convblock2 = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False),
            nn.Conv2d(32, 64, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        self.convblock3 = nn.Sequential(nn.Conv2d(128, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU())
        self.convblock4 = nn.Sequential(nn.Conv2d(256, mask_channels + depth_channels, 3, padding=1, bias=False))

    def forward(self, background: Tensor, composite: Tensor) -> tuple[Tensor, Tensor]:
        """``background``, ``composite`` ``(B, C, H, W)`` -> ``(mask_logits, depth)``, ``(B, 1, H, W)`` each."""
        bg = self.convblock2(self.convblock1(background))
        fg_bg = self.convblock2(self.convblock1(composite))
        out = self.convblock4(self.convblock3(torch.cat([bg, fg_bg], dim=1)))
        return out[:, : self.mask_channels], out[:, self.mask_channels :]
