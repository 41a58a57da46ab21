"""Models that predict a composite's mask and depth from its background and the composite.

Every model takes the batch dict (``bg_image`` and ``fg_bg_image``, each ``(B, C, H, W)``) and returns
``(mask_logits, depth)``, each ``(B, 1, H, W)`` at the input's size: mask logits before the sigmoid, depth
as the raw head output (``fgbg.training.module.MaskDepthModule`` applies the output activation). Constructors take
``in_channels`` (per image), ``mask_channels`` and ``depth_channels``, so a model is one file here and one
YAML in ``conf/model/``.
"""
