"""Where backgrounds and foregrounds come from: the built-in sample scenes or a user's folders.

A source's ``load(n_bg, n_fg)`` returns :class:`Scenes`, validated in full before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import scenes
from .errors import FgbgError
from .names import BG_SIZE, FG_SIZE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class SourceError(FgbgError, ValueError):
    """User-supplied images that cannot be used; the message names the file."""


@dataclass
class Scenes:
    """Inputs of a dataset; list position ``i`` holds image id ``i + 1``.

    ``bg_rgb``: ``(BG_SIZE, BG_SIZE, 3)`` uint8; ``bg_depth``: ``(BG_SIZE, BG_SIZE)`` float32 metres or None.
    ``fg_rgba``: ``(FG_SIZE, FG_SIZE, 4)`` uint8 with alpha 0/255; ``fg_relief``: ``(FG_SIZE, FG_SIZE)`` or None.
    ``origin``: what each id was made from (recorded in the manifest).
    """

    bg_rgb: list[np.ndarray]
    fg_rgba: list[np.ndarray]
    bg_depth: list[np.ndarray] | None = None
    fg_relief: list[np.ndarray] | None = None
    origin: dict = field(default_factory=dict)

    @property
    def has_depth(self) -> bool:
        return self.bg_depth is not None and self.fg_relief is not None


class SampleScenes:
    """The built-in rooms and objects of :mod:`fgbg.scenes`, seeded; they carry exact depth."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def load(self, n_bg: int, n_fg: int) -> Scenes:
        bgs = [scenes.background(self.seed, i) for i in range(1, n_bg + 1)]
        fgs = [scenes.foreground(self.seed, i) for i in range(1, n_fg + 1)]
        return Scenes(
            bg_rgb=[rgb for rgb, _ in bgs],
            bg_depth=[depth for _, depth in bgs],
            fg_rgba=[rgba for rgba, _ in fgs],
            fg_relief=[relief for _, relief in fgs],
            origin={"source": "sample", "seed": self.seed},
        )


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]


def _list_images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise SourceError(f"{what} folder {folder} does not exist")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not files:
        raise SourceError(f"{what} folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    stems = [p.stem for p in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise SourceError(f"{what} folder {folder}: several files share the name {duplicates[0]!r}")
    return files


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise SourceError(f"{path}: cannot read image ({error})") from error


class ImageFolders:
    """A user's backgrounds and foregrounds.

    Args:
        bg_dir: background images, any common format; ids follow natural sort order of the names.
        fg_dir: foregrounds, RGBA with an alpha channel, or RGB when ``mask_dir`` holds a mask of the same name.
        mask_dir: optional grayscale masks (white = foreground) named like the foregrounds.
        wrong_size: ``resize`` images that are not 160x160 (backgrounds) / 80x80 (foregrounds), or ``reject`` them.
    """

    def __init__(self, bg_dir: str, fg_dir: str, mask_dir: str | None = None, wrong_size: str = "resize"):
        if wrong_size not in ("resize", "reject"):
            raise ValueError(f"wrong_size must be 'resize' or 'reject', got {wrong_size!r}")
        self.bg_dir, self.fg_dir = Path(bg_dir), Path(fg_dir)
        self.mask_dir = Path(mask_dir) if mask_dir else None
        self.wrong_size = wrong_size

    def _sized(self, image: Image.Image, size: int, path: Path, resample: int) -> Image.Image:
        if image.size == (size, size):
            return image
        if self.wrong_size == "reject":
            raise SourceError(f"{path}: size {image.size[0]}x{image.size[1]}, expected {size}x{size}")
        return image.resize((size, size), resample)

    def _check_count(self, files: list[Path], wanted: int, folder: Path, what: str) -> list[Path]:
        if len(files) != wanted:
            raise SourceError(f"{what} folder {folder} holds {len(files)} images, the config asks for {wanted}")
        return files

    def load(self, n_bg: int, n_fg: int) -> Scenes:
        bg_files = self._check_count(_list_images(self.bg_dir, "background"), n_bg, self.bg_dir, "background")
        fg_files = self._check_count(_list_images(self.fg_dir, "foreground"), n_fg, self.fg_dir, "foreground")
        masks = {}
        if self.mask_dir is not None:
            masks = {p.stem: p for p in _list_images(self.mask_dir, "mask")}
            orphans = sorted(set(masks) - {p.stem for p in fg_files})
            if orphans:
                raise SourceError(f"{masks[orphans[0]]}: mask has no foreground of the same name in {self.fg_dir}")

        bg_rgb = [
            np.asarray(self._sized(_open(p).convert("RGB"), BG_SIZE, p, Image.Resampling.LANCZOS)) for p in bg_files
        ]
        fg_rgba = [self._load_foreground(p, masks.get(p.stem)) for p in fg_files]
        origin = {
            "source": "folders",
            "bg": {i + 1: p.name for i, p in enumerate(bg_files)},
            "fg": {i + 1: p.name for i, p in enumerate(fg_files)},
        }
        return Scenes(bg_rgb=bg_rgb, fg_rgba=fg_rgba, origin=origin)

    def _load_foreground(self, path: Path, mask_path: Path | None) -> np.ndarray:
        image = _open(path)
        if mask_path is not None:
            alpha = self._sized(_open(mask_path).convert("L"), FG_SIZE, mask_path, Image.Resampling.NEAREST)
        elif "A" in image.getbands() or "transparency" in image.info:
            alpha = self._sized(image.convert("RGBA").getchannel("A"), FG_SIZE, path, Image.Resampling.NEAREST)
        else:
            raise SourceError(f"{path}: no alpha channel and no mask of the same name (set source.mask_dir)")
        rgb = self._sized(image.convert("RGB"), FG_SIZE, path, Image.Resampling.LANCZOS)
        rgba = np.empty((FG_SIZE, FG_SIZE, 4), np.uint8)
        rgba[..., :3] = np.asarray(rgb)
        # A clean cut-out: the composite and the stored mask must agree pixel for pixel.
        rgba[..., 3] = np.where(np.asarray(alpha) >= 128, 255, 0)
        if not rgba[..., 3].any():
            raise SourceError(f"{mask_path or path}: the mask is empty (no pixel >= 128)")
        return rgba
