"""``predict.py``'s body: a checkpoint's mask and depth for composites on one background, written as PNGs.

For each composite ``<stem>.<ext>``, at the composite's own size, in ``out``:

    <stem>_mask.png          the mask, 8-bit gray: 255 foreground, 0 background
    <stem>_depth.png         the depth, 8-bit gray, brighter = nearer (the training targets' scale)
    <stem>_side_by_side.png  composite | mask | depth

A checkpoint trained on mask-only data (or a model without depth) writes no depth: the figure is composite | mask.
Images are preprocessed as the checkpoint's training data were (its
:class:`~fgbg.data.transforms.Preprocessing`: size, grayscale, normalisation), and the predictions resized
back to each composite's size. Every input is read and checked,
and every prediction made, before the first file is written; each file is written under a temporary name
and renamed when complete.

predict never writes over its inputs: listing a folder skips files named like its outputs (an earlier run's,
when ``out`` is the inputs folder), and a file it would write that is an input (``bg``, say) stops it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.transforms import Preprocessing
from fgbg.errors import FgbgError
from fgbg.format.images import read_image
from fgbg.format.writer import atomic_path, encode_jpeg
from fgbg.training.module import MaskDepthModule, load_module

log = logging.getLogger(__name__)

OUTPUTS = ("mask", "depth", "side_by_side")  # file names: <stem>_<output>.png
# Non-JPEG inputs are encoded as JPEG at this quality, so that they reach the model through training's decoder.
REENCODE_QUALITY = 95
GAP = 4  # white pixels between the side-by-side figure's panels


class PredictionError(FgbgError, ValueError):
    """An input that predict cannot use; the message names the file."""


def predict(
    ckpt_path: str | Path,
    bg: str | Path,
    inputs: str | Path,
    out: str | Path,
    device: str = "auto",
    batch_size: int = 16,
) -> list[Path]:
    """Predict every composite of ``inputs`` (an image, or a folder's images) on background ``bg``.

    Args:
        ckpt_path: a checkpoint of ``train.py`` (any model).
        bg: the background; it must have the composites' size.
        inputs: a composite, or a folder whose image files (by extension, sorted by name) are; ``bg`` and
            files named like predict's outputs (``*_mask.png``, ...) are skipped.
        out: the folder to write to (made if missing; files of the same names are replaced, unless they
            are inputs).
        device: ``auto`` (the GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``, ...
        batch_size: composites per forward pass.

    Returns the written files, three per composite (two without depth; see the module's docstring). Raises, before writing
    anything, :class:`~fgbg.training.module.CheckpointError` (a missing or unreadable checkpoint),
    :class:`~fgbg.format.images.ImageError` (a missing or unreadable image), :class:`PredictionError` (a
    checkpoint without the training data's settings, composites whose size differs from the background's, two
    with the same stem, none at all, or an output that would overwrite an input).
    """
    module = load_module(Path(ckpt_path))
    paths, (background, bg_pixels), (composites, pixels) = _read_inputs(
        Path(bg), Path(inputs), Path(out), _preprocessing(module, Path(ckpt_path))
    )
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    module.to(device).eval()
    outputs: dict[str, Image.Image] = {}
    for start in range(0, len(paths), batch_size):
        chunk = slice(start, start + batch_size)
        masks, depths = _predict(module, bg_pixels, np.stack(pixels[chunk]), background.size, device)
        outputs |= _figures(paths[chunk], composites[chunk], masks, depths)
    written = [_write_png(image, Path(out) / name) for name, image in outputs.items()]
    log.info("%d composites predicted with %s on %s: %s", len(paths), ckpt_path, device, out)
    return written


def load_predictor(ckpt_path: str | Path) -> MaskDepthModule:
    """:func:`~fgbg.training.module.load_module`, refused (:class:`PredictionError`) when the checkpoint does not
    record its training preprocessing, which preparing inputs needs."""
    module = load_module(Path(ckpt_path))
    _preprocessing(module, Path(ckpt_path))
    return module


def predict_pair(
    module: MaskDepthModule, background: Image.Image, composite: Image.Image
) -> tuple[np.ndarray, np.ndarray | None]:
    """One background and composite of the same size -> 8-bit mask (0/255) and depth (None without depth),
    ``(H, W)`` each at the composite's size, as :func:`predict` makes them (images encoded as JPEG first).

    ``module``: from :func:`load_predictor`, in eval mode, on the device to predict on.
    """
    if background.size != composite.size:
        raise PredictionError(
            f"the composite is {_size(composite)} but the background is {_size(background)}: "
            "a composite and its background must have the same size"
        )
    bg_pixels, pixels = (_pixels(image, module.preprocessing) for image in (background, composite))
    masks, depths = _predict(module, bg_pixels, pixels[None], composite.size, module.device)
    return masks[0], None if depths is None else depths[0]


def side_by_side(*panels: Image.Image) -> Image.Image:
    """``composite | mask | depth`` (or any same-size images), ``GAP`` white pixels apart -> an RGB figure."""
    width, height = panels[0].size
    figure = Image.new("RGB", (len(panels) * (width + GAP) - GAP, height), "white")
    for i, panel in enumerate(panels):
        figure.paste(panel.convert("RGB"), (i * (width + GAP), 0))
    return figure


def _figures(
    paths: list[Path], composites: tuple[Image.Image, ...], masks: np.ndarray, depths: np.ndarray | None
) -> dict[str, Image.Image]:
    """The composites' outputs (see ``OUTPUTS``) by file name, from their 8-bit masks and depths ``(N, H, W)``
    (``None``: no depth output)."""
    figures = {}
    for i, (path, composite) in enumerate(zip(paths, composites)):
        images = {"mask": Image.fromarray(masks[i])}
        if depths is not None:
            images["depth"] = Image.fromarray(depths[i])
        images["side_by_side"] = side_by_side(composite, *images.values())
        figures |= {_output_name(path.stem, kind): image for kind, image in images.items()}
    return figures


def _read_inputs(bg_path: Path, inputs: Path, out: Path, preprocessing: Preprocessing) -> tuple:
    """The composites' paths, ``(image, pixels)`` of the background, and ``(images, pixels)`` of the composites
    (tuples, in the paths' order), each read, decoded and checked: nothing overwritten, sizes that match."""
    paths = _composite_paths(inputs, bg_path)
    _refuse_overwriting_inputs(out, paths, bg_path)
    background, bg_pixels = _read(bg_path, preprocessing)
    composites, pixels = zip(*(_read(path, preprocessing) for path in paths))
    for path, image in zip(paths, composites):
        if image.size != background.size:
            raise PredictionError(
                f"{path} is {_size(image)} but the background {bg_path} is {_size(background)}: "
                "a composite and its background must have the same size"
            )
    return paths, (background, bg_pixels), (composites, pixels)


def _preprocessing(module: MaskDepthModule, ckpt_path: Path) -> Preprocessing:
    """The checkpoint's training preprocessing (``build_module`` records it)."""
    if module.preprocessing is None:
        raise PredictionError(
            f"{ckpt_path}: records no data settings (image_size, grayscale, normalize): it was not made by "
            "train.py, or before checkpoints recorded them; retrain it to predict with it"
        )
    return module.preprocessing


def _output_name(stem: str, kind: str) -> str:
    """The name predict writes output ``kind`` (one of ``OUTPUTS``) of composite ``<stem>.<ext>`` under."""
    return f"{stem}_{kind}.png"


def _composite_paths(inputs: Path, bg: Path) -> list[Path]:
    """``inputs`` itself, or the image files of folder ``inputs`` by name, less ``bg`` and predict's outputs."""
    if inputs.is_file():
        return [inputs]
    if not inputs.is_dir():
        raise PredictionError(f"{inputs}: no such file or folder")
    extensions = {ext for ext, name in Image.registered_extensions().items() if name in Image.OPEN}
    bg_identity = _identity(bg)
    images = sorted(
        p for p in inputs.iterdir() if p.is_file() and p.suffix.lower() in extensions and _identity(p) != bg_identity
    )
    # An earlier run's outputs, when out was this folder: as composites they would make *_mask_mask.png, ...
    output_ends = tuple(_output_name("", kind) for kind in OUTPUTS)
    paths = [p for p in images if not p.name.endswith(output_ends)]
    skipped = len(images) - len(paths)
    if skipped:
        log.info("%s: skipped %d files named like predict's outputs (*%s)", inputs, skipped, ", *".join(output_ends))
    if not paths:
        besides = f" besides {skipped} named like predict's outputs" if skipped else ""
        raise PredictionError(f"{inputs}: no image files in this folder{besides}")
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise PredictionError(f"{stems[path.stem]} and {path} would write the same files ({path.stem}_*.png)")
        stems[path.stem] = path
    return paths


def _identity(path: Path) -> tuple[int, int] | None:
    """The file ``path`` names, as ``(device, inode)``; None when there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _refuse_overwriting_inputs(out: Path, paths: list[Path], bg: Path) -> None:
    """Raise :class:`PredictionError` if a file predict would write in ``out`` is ``bg`` or a composite."""
    inputs = {_identity(path) for path in (*paths, bg)} - {None}
    for path in paths:
        for kind in OUTPUTS:
            target = out / _output_name(path.stem, kind)
            if _identity(target) in inputs:
                raise PredictionError(
                    f"{target} is one of predict's inputs and would be overwritten: choose another out folder"
                )


def _read(path: Path, preprocessing: Preprocessing) -> tuple[Image.Image, np.ndarray]:
    """The image at ``path`` as it is (:func:`~fgbg.format.images.read_image`: 16-bit and float scaled to 8 bits) and
    the uint8 pixels training's decoder makes of it (``preprocessing.image``)."""
    image = read_image(path)
    # JPEGs go to training's decoder as they are; other images are encoded as JPEG first (REENCODE_QUALITY).
    data = path.read_bytes() if image.format == "JPEG" and image.mode in ("L", "RGB") else None
    return image, _pixels(image, preprocessing, data, str(path))


def _pixels(
    image: Image.Image, preprocessing: Preprocessing, data: bytes | None = None, name: str | None = None
) -> np.ndarray:
    """The uint8 pixels training's decoder makes of ``image``: of its JPEG bytes ``data``, or (None) of it encoded as
    JPEG at ``REENCODE_QUALITY``. ``name`` labels a decoding error."""
    if data is None:
        data = encode_jpeg(np.asarray(image.convert("RGB")), REENCODE_QUALITY)
    try:
        return preprocessing.image(data, name)
    except ValueError as error:  # the JPEG decoder's message names the file
        raise PredictionError(str(error)) from error


def _predict(
    module: MaskDepthModule, bg_pixels: np.ndarray, pixels: np.ndarray, size: tuple[int, int], device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decoded pixels of the background ``(h, w[, 3])`` and of N composites ``(N, h, w[, 3])`` -> 8-bit mask
    (0/255) and depth (None for a module without depth), ``(N, H, W)`` each, at ``size`` = ``(W, H)``, through
    the module's preprocessing."""
    background, composite = module.preprocessing.inputs(np.broadcast_to(bg_pixels, pixels.shape), pixels)
    batch = {BACKGROUND: background.to(device), COMPOSITE: composite.to(device)}
    with torch.inference_mode():
        prediction = module.predict_step(batch, 0)
    width, height = size
    mask = _resize(prediction[MASK], (height, width))
    depth = _to_uint8(_resize(prediction[DEPTH], (height, width))) if DEPTH in prediction else None
    return _to_uint8((mask > 0.5).float()), depth


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, 1, S, S)`` -> ``(N, 1, H, W)``, bilinear (antialiased when shrinking)."""
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False, antialias=True)


def _to_uint8(maps: Tensor) -> np.ndarray:
    """``(N, 1, H, W)`` in [0, 1] -> ``(N, H, W)`` uint8."""
    return maps[:, 0].clamp(0, 1).mul(255).round().byte().cpu().numpy()


def _size(image: Image.Image) -> str:
    return f"{image.width}x{image.height}"


def _write_png(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        image.save(partial, format="PNG")
    return path
