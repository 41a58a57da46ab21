"""The batch contract: the keys of a sample (and of a batch of them) as the data side hands it to training.

``background`` (the plate) and ``composite`` (a foreground pasted on it) are the model's inputs, ``(B, C, H, W)``
float each; ``mask`` (0/1, foreground = 1) and ``depth`` ([0, 1], brighter = nearer) its targets, ``(B, 1, H, W)``.
Models never see these keys: the LightningModule unpacks a batch and passes the inputs as tensors.
"""

BACKGROUND, COMPOSITE, MASK, DEPTH = "background", "composite", "mask", "depth"
INPUTS = (BACKGROUND, COMPOSITE)
TARGETS = (MASK, DEPTH)
KEYS = INPUTS + TARGETS
