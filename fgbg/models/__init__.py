"""Models that predict a composite's mask and depth from its background and the composite.

Every model is an ``nn.Module`` on tensors: ``forward(background, composite)``, each ``(B, C, H, W)``, returns
``(mask_logits, depth)``, each ``(B, 1, H, W)`` at the input's size: mask logits before the sigmoid, depth as
the raw head output (``fgbg.training.module.MaskDepthModule`` applies the output activation), or ``None`` from a
model whose ``predicts_depth`` is False (:class:`~fgbg.models.base.MaskDepthNet`). Models know nothing of the
batch dict (``fgbg.data.batch``): the LightningModule unpacks it, so a model can be called, traced or exported
on two tensors. The learned models' constructors take ``in_channels`` (per image), ``mask_channels`` and
``depth_channels``, so a model is one file here and one YAML in ``conf/model/``.

A model with a ``calibrate(batches)`` method (``subtraction.Subtraction``, the background-subtraction baseline)
is not trained: train.py calibrates it on the validation split in place of fitting (``fgbg.tasks.calibrated``).
"""
