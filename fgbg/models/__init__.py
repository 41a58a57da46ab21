"""Models that predict a composite's mask and depth from its background and the composite.

Every model is an ``nn.Module`` on tensors: ``forward(background, composite)``, each ``(B, C, H, W)``, returns
``(mask_logits, depth)``, each ``(B, 1, H, W)`` at the input's size: mask logits before the sigmoid, depth as
the raw head output (``fgbg.training.module.MaskDepthModule`` applies the output activation). Models know
nothing of the batch dict (``fgbg.data.batch``): the LightningModule unpacks it, so a model can be called,
traced or exported on two tensors. Constructors take ``in_channels`` (per image), ``mask_channels`` and
``depth_channels``, so a model is one file here and one YAML in ``conf/model/``.
"""
