"""What every model tells the LightningModule about its outputs, as class attributes of :class:`MaskDepthNet`."""

from __future__ import annotations

from torch import nn

# How raw depth becomes [0, 1]: the source document's sigmoid, or the straight-through clamp
# (fgbg.training.module.bounded_depth), whose gradient never vanishes.
DEPTH_OUTPUTS = ("sigmoid", "clamp")


class MaskDepthNet(nn.Module):
    """A model of ``fgbg.models``: ``forward(background, composite) -> (mask_logits, raw depth | None)``.

    ``predicts_depth``: False for a model without a depth output (its ``forward`` returns ``None`` for it; the
    module then trains and scores the mask alone). ``depth_output``: one of :data:`DEPTH_OUTPUTS`.
    """

    predicts_depth: bool = True
    depth_output: str = "sigmoid"
