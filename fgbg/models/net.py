"""The source document's Model1 (``Net``): a residual depth trunk and a separable-conv mask branch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fgbg.models.base import MaskDepthNet


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()]


class Net(MaskDepthNet):
    """Model1, layer for layer as the source document gives it; every conv keeps the input's size.

    Depth branch (full width, on both images stacked): ``input_layer`` (64) -> ``layer1`` (128) ->
    ``+ resblock1`` -> ``layer2`` (256) -> ``layer3`` (256) -> ``+ resblock2`` -> ``layer4``.
    Mask branch: ``layer5`` (32) and ``layer6`` (depthwise 3x3, pointwise to 128) shared by the background
    and the composite, concatenated (256) -> ``layer7`` (512) -> ``layer8`` (512) -> ``layer9`` (256) -> ``layer10``.

    Mended: the document's heads ``layer4`` and ``layer10`` output 3 channels against 1-channel targets;
    here they output ``depth_channels`` and ``mask_channels``. ``in_channels`` generalises its 3 (the
    input layer sees both images, ``2 * in_channels``). The document returns ``(y, x)`` and its training
    loop feeds ``output[0]`` to the mask loss and ``output[1]`` to the depth loss, so ``y`` (the mask
    branch) is the mask and ``x`` (the trunk) the depth, as returned here. Modules are nested as in the
    document, so state-dict keys match its (``resblock1.3.weight``, ``layer4.0.weight``, ...).
    """

    def __init__(self, in_channels: int = 3, mask_channels: int = 1, depth_channels: int = 1):
        super().__init__()
        self.input_layer = nn.Sequential(*_conv_bn_relu(2 * in_channels, 64))
        self.layer1 = nn.Sequential(*_conv_bn_relu(64, 128))
        self.resblock1 = nn.Sequential(*_conv_bn_relu(128, 128), *_conv_bn_relu(128, 128))
        self.layer2 = nn.Sequential(*_conv_bn_relu(128, 256))
        self.layer3 = nn.Sequential(*_conv_bn_relu(256, 256))
        # The document's second residual block ends on BatchNorm, without a ReLU.
        self.resblock2 = nn.Sequential(
            *_conv_bn_relu(256, 256), nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256)
        )
        self.layer4 = nn.Sequential(nn.Conv2d(256, depth_channels, 3, padding=1, bias=False))

        self.layer5 = nn.Sequential(*_conv_bn_relu(in_channels, 32))
        self.layer6 = nn.Sequential(
            nn.Conv2d(32, 64, 3, padding=1, groups=32, bias=False),
            nn.Conv2d(64, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
        )
        self.layer7 = nn.Sequential(
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.Conv2d(256, 512, 1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.layer8 = nn.Sequential(
            nn.Conv2d(512, 512, 3, padding=1, bias=False),
            nn.Conv2d(512, 512, 1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.layer9 = nn.Sequential(*_conv_bn_relu(512, 256))
        self.layer10 = nn.Sequential(nn.Conv2d(256, mask_channels, 3, padding=1, bias=False))

    def forward(self, background: Tensor, composite: Tensor) -> tuple[Tensor, Tensor]:
        """``background``, ``composite`` ``(B, C, H, W)`` -> ``(mask_logits, depth)``, ``(B, 1, H, W)`` each."""
        bg, fg_bg = background, composite

        x = self.layer1(self.input_layer(torch.cat([bg, fg_bg], dim=1)))
        x = x + self.resblock1(x)
        x = self.layer3(self.layer2(x))
        x = x + self.resblock2(x)
        depth = self.layer4(x)

        y = torch.cat([self.layer6(self.layer5(bg)), self.layer6(self.layer5(fg_bg))], dim=1)
        mask_logits = self.layer10(self.layer9(self.layer8(self.layer7(y))))
        return mask_logits, depth
