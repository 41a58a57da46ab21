"""Decoding zip members into training tensors.

The source document's transform was ``Resize((64, 64)) -> Grayscale(3) -> ToTensor()`` for all four
images. Two mends: the mask and depth targets stay one channel (Grayscale(3) made them three), and the
mask is thresholded back to 0/1 (JPEG makes its edges grey). JPEGs are decoded at reduced scale
(DCT scaling) when the target size allows, which is both faster and a proper low-pass before resizing.
"""

from __future__ import annotations

import numpy as np
import simplejpeg
import torch
from PIL import Image


def decode(data: bytes, size: int, gray: bool, name: str) -> np.ndarray:
    """JPEG bytes -> ``(size, size)`` (gray) or ``(size, size, 3)`` uint8; ``name`` labels errors."""
    try:
        image = simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if gray else "RGB", fastdct=True, min_height=size, min_width=size
        )
    except ValueError as error:
        raise ValueError(f"{name}: cannot decode JPEG ({error})") from error
    if gray:
        image = image[..., 0]
    if image.shape[:2] != (size, size):
        image = np.array(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return image


class SampleTransform:
    """Turn a sample's four JPEGs into the batch contract's tensors.

    Returns ``bg_image``, ``fg_bg_image``: ``(C, S, S)`` float (C = 3, gray replicated, when
    ``grayscale`` as in the source document, else RGB), optionally normalised with per-category
    ``stats`` (``{category: {"mean": m, "std": s}}``); ``ms_bg_image``: ``(1, S, S)`` 0/1;
    ``dp_image``: ``(1, S, S)`` in [0, 1], brighter = nearer.
    """

    def __init__(self, image_size: int = 64, grayscale: bool = True, stats: dict | None = None):
        self.size, self.grayscale = image_size, grayscale
        self.stats = stats

    def image(self, data: bytes, category: str, name: str) -> torch.Tensor:
        pixels = decode(data, self.size, self.grayscale, name)
        tensor = torch.from_numpy(pixels).float().div_(255)
        tensor = tensor.expand(3, -1, -1).contiguous() if self.grayscale else tensor.permute(2, 0, 1).contiguous()
        if self.stats is not None:
            tensor = (tensor - self.stats[category]["mean"]) / self.stats[category]["std"]
        return tensor

    def mask(self, data: bytes, name: str) -> torch.Tensor:
        return torch.from_numpy(decode(data, self.size, True, name) > 127).float()[None]

    def depth(self, data: bytes, name: str) -> torch.Tensor:
        return torch.from_numpy(decode(data, self.size, True, name)).float().div_(255)[None]
