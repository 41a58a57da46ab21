"""Decoding zip members into training tensors: JPEG bytes -> uint8 pixels -> resized batch -> float tensors.

The source document's transform was ``Resize((64, 64)) -> Grayscale(3) -> ToTensor()`` for all four
images. Two mends: the mask and depth targets stay one channel (Grayscale(3) made them three), and the
mask is thresholded back to 0/1 (JPEG makes its edges grey). JPEGs are decoded at reduced scale
(DCT scaling: 160 -> 80 for 64) when the target size allows, which is both faster and a proper low-pass,
and a whole batch is resized the rest of the way at once.

The resized uint8 pixels are what the decoded cache (``fgbg.data.cache``) stores; the float step works on
one sample or on a whole batch (any leading dimensions), so both paths give the same tensors. Prediction
takes the same steps on the inputs alone (:meth:`Preprocessing.inputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, INPUTS, MASK, TARGETS
from fgbg.data.packed import PackedBatch, packed
from fgbg.errors import ConfigError, check_int
from fgbg.format.names import BG, BG_SIZE, FG_BG

# The inputs, with the category whose statistics normalise them.
INPUT_CATEGORIES = {BACKGROUND: BG, COMPOSITE: FG_BG}
# torch resamples uint8 with interleaved channels in vectorised code for up to 4 of them (RGBA).
_PLANES_PER_RESIZE = 4
# data.image_size: the decoder's DCT scaling gives n/8 of the stored side (20..160 px), the resize the rest.
# Above BG_SIZE nothing more was stored (the resize would only interpolate); below 8 px, one JPEG block, a
# foreground (half the side) is under 4 px, no mask left to learn.
_IMAGE_SIZES = (8, BG_SIZE)


def decode(data: bytes, size: int, gray: bool, name: str | None = None) -> np.ndarray:
    """JPEG bytes -> ``(H, W)`` (gray) or ``(H, W, 3)`` uint8 at the smallest DCT scale with sides >= ``size``.

    ``name``, when given, labels errors.
    """
    try:
        image = simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if gray else "RGB", fastdct=True, min_height=size, min_width=size
        )
    except ValueError as error:
        raise ValueError(f"{name + ': ' if name else ''}cannot decode JPEG ({error})") from error
    return image[..., 0] if gray else image


def resize(planes: np.ndarray, size: int) -> np.ndarray:
    """``(B, H, W, P)`` uint8 -> ``(B, size, size, P)`` uint8, antialiased bilinear (within 2 grey levels of PIL's).

    Planes go four at a time through torch's vectorised uint8 path: over ten times faster than PIL per
    80 -> 64 plane (a single gray plane would take torch's generic path, no faster than PIL). One sample
    at a time: torch would spread a whole batch over its intra-op threads, which on a busy machine costs
    three times what it saves. Planes are padded to a multiple of four with blank ones: torch rounds
    its generic path otherwise, and a plane resizes the same whatever is stacked beside it.
    """
    count = planes.shape[-1]
    padding = -count % _PLANES_PER_RESIZE
    if padding:
        planes = np.concatenate([planes, np.zeros((*planes.shape[:-1], padding), np.uint8)], axis=-1)
    out = np.empty((len(planes), size, size, planes.shape[-1]), np.uint8)
    for i, sample in enumerate(planes):
        for start in range(0, planes.shape[-1], _PLANES_PER_RESIZE):
            group = torch.from_numpy(np.ascontiguousarray(sample[None, ..., start : start + _PLANES_PER_RESIZE]))
            resized = F.interpolate(group.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", antialias=True)
            out[i, ..., start : start + _PLANES_PER_RESIZE] = resized[0].permute(1, 2, 0).numpy()
    return out[..., :count]


@dataclass(frozen=True)
class Preprocessing:
    """How images become the model's tensors: ``image_size`` (side, px), ``grayscale``, normalisation ``stats``.

    One object, made by the DataModule from ``data.*`` (:meth:`from_data`), saved in a checkpoint as one entry
    (:meth:`to_config`) and rebuilt from it (``Preprocessing(**entry)``), so eval and predict prepare images as
    training did. Equal objects prepare images identically.

    ``image`` / ``target`` decode one JPEG at reduced scale (``decode``); ``resized`` takes those pixels
    stacked per key of the batch contract (:mod:`fgbg.data.batch`), ``(B, H, W)`` or ``(B, H, W, 3)``, to
    ``(B, S, S[, 3])``; ``tensors`` turns resized pixels, with any leading dimensions ``*``, into
    ``background``, ``composite``: ``(*, C, S, S)`` float (C = 3, gray replicated, when ``grayscale`` as in the
    source document, else RGB), normalised with per-category ``stats`` (``{category: {"mean": m, "std": s}}``)
    unless they are ``None``; ``mask``: ``(*, 1, S, S)`` 0/1; ``depth``: ``(*, 1, S, S)`` in [0, 1], brighter =
    nearer, when the pixels have it (mask-only data has none). ``inputs`` does both steps for the inputs alone,
    as prediction needs.
    """

    image_size: int
    grayscale: bool
    stats: dict | None

    def __post_init__(self):
        check_int("data.image_size", self.image_size, *_IMAGE_SIZES)
        if not isinstance(self.grayscale, bool):
            raise ConfigError(f"data.grayscale={self.grayscale!r}: expected true or false")

    @classmethod
    def from_data(cls, data: Mapping) -> Preprocessing:
        """From the ``data`` group's ``image_size``, ``grayscale``, ``normalize`` and ``stats``."""
        stats = data["stats"] if data["normalize"] else None
        # Plain containers, as a checkpoint keeps them (Hydra hands a DictConfig to the DataModule).
        if isinstance(stats, DictConfig):
            stats = OmegaConf.to_container(stats, resolve=True)
        return cls(data["image_size"], data["grayscale"], stats)

    def to_config(self) -> dict:
        """Plain values, as a checkpoint's hyperparameters keep them."""
        return {"image_size": self.image_size, "grayscale": self.grayscale, "stats": self.stats}

    def differences(self, other: Preprocessing) -> dict[str, tuple]:
        """``{field: (this one's, other's)}`` for each field that differs; empty when both prepare images alike."""
        theirs = other.to_config()
        return {key: (value, theirs[key]) for key, value in self.to_config().items() if theirs[key] != value}

    def image(self, data: bytes, name: str | None = None) -> np.ndarray:
        """An input (background or composite) -> uint8 pixels, gray or RGB."""
        return decode(data, self.image_size, self.grayscale, name)

    def target(self, data: bytes, name: str | None = None) -> np.ndarray:
        """A target (mask or depth) -> gray uint8 pixels."""
        return decode(data, self.image_size, True, name)

    def resized(self, pixels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if next(iter(pixels.values())).shape[1:3] == (self.image_size, self.image_size):
            return pixels
        # All of a sample's planes side by side (4 when gray), resized together.
        planes = [p if p.ndim == 4 else p[..., None] for p in pixels.values()]
        out = resize(np.concatenate(planes, axis=-1), self.image_size)
        resized, start = {}, 0
        for (key, original), plane in zip(pixels.items(), planes):
            channels = plane.shape[-1]
            resized[key] = out[..., start : start + channels] if original.ndim == 4 else out[..., start]
            start += channels
        return resized

    def tensors(self, pixels: dict[str, np.ndarray]) -> PackedBatch:
        # Written in place into views of one storage: no temporaries, and one piece to pin, pickle or move.
        lead = pixels[MASK].shape[:-2]
        plane = (self.image_size, self.image_size)
        shapes = {key: (*lead, 3, *plane) for key in INPUTS} | {key: (*lead, 1, *plane) for key in TARGETS if key in pixels}
        out = packed(shapes)
        self._write_inputs(pixels, out)
        np.greater(pixels[MASK], 127, out=out[MASK].numpy()[..., 0, :, :])
        if DEPTH in pixels:  # mask-only data (made with depth=none) has none
            _unit(pixels[DEPTH], out[DEPTH].numpy()[..., 0, :, :])
        return out

    def torch_tensors(self, pixels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`tensors` of resized uint8 pixels held in torch tensors, computed where they are (the decoded
        cache on a GPU): the same values."""
        out = {}
        for key in INPUTS:
            image = pixels[key].float().div_(255)
            image = image.unsqueeze(-3) if self.grayscale else image.movedim(-1, -3)
            if self.stats is not None:
                category = self.stats[INPUT_CATEGORIES[key]]
                image = (image - category["mean"]) / category["std"]
            out[key] = image.expand(*image.shape[:-3], 3, *image.shape[-2:]).contiguous()
        out[MASK] = (pixels[MASK] > 127).float().unsqueeze(-3)
        if DEPTH in pixels:
            out[DEPTH] = pixels[DEPTH].float().div_(255).unsqueeze(-3)
        return out

    def inputs(self, background: np.ndarray, composite: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded pixels of the inputs (``image``), ``(B, H, W[, 3])`` each -> ``background``, ``composite``
        ``(B, C, S, S)``: the tensors training makes of the same pixels, without targets."""
        pixels = self.resized({BACKGROUND: background, COMPOSITE: composite})
        out = packed({key: (len(background), 3, self.image_size, self.image_size) for key in INPUTS})
        self._write_inputs(pixels, out)
        return out[BACKGROUND], out[COMPOSITE]

    def _write_inputs(self, pixels: dict[str, np.ndarray], out: dict[str, torch.Tensor]) -> None:
        # In NumPy, which runs these small element-wise steps on the calling thread: torch would spread
        # them over its intra-op threads, which the model's step needs (and which spin when contended).
        for key in INPUTS:
            image = out[key].numpy()  # (*, 3, S, S)
            # Gray: convert one plane, then replicate it (a third of the work).
            first = image[..., :1, :, :] if self.grayscale else image
            _unit(pixels[key][..., None, :, :] if self.grayscale else np.moveaxis(pixels[key], -1, -3), first)
            if self.stats is not None:
                category = self.stats[INPUT_CATEGORIES[key]]
                np.subtract(first, np.float32(category["mean"]), out=first)
                np.divide(first, np.float32(category["std"]), out=first)
            if self.grayscale:
                image[..., 1:, :, :] = first


def _unit(pixels: np.ndarray, out: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], written to ``out``."""
    return np.divide(pixels, np.float32(255), out=out, dtype=np.float32)
