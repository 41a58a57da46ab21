"""Where backgrounds and foregrounds come from: the built-in sample scenes or a user's folders.

A source's ``counts(n_bg, n_fg)`` gives the numbers of images a run uses (a user's folders decide theirs) and
``load(n_bg, n_fg)`` returns :class:`Scenes`, validated in full before anything is written.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fgbg.build import scenes
from fgbg.errors import ConfigError, FgbgError, check_choice
from fgbg.format.images import read_image
from fgbg.format.names import BG_SIZE, FG_SIZE

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
WRONG_SIZES = ("resize", "reject")
# Names listed per kind when a count is wrong: enough to spot a stray file, few enough for one line.
SHOWN_NAMES = 10


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
    """The built-in rooms and objects of :mod:`fgbg.build.scenes`, seeded; they carry exact depth."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def counts(self, n_bg: int | None, n_fg: int | None) -> tuple[int, int]:
        """``(n_bg, n_fg)`` as given: the scenes are made, not found, so there is no "all of them" (None)."""
        for key, value in (("n_bg", n_bg), ("n_fg", n_fg)):
            if value is None:
                raise ConfigError(f"{key}=null: the sample scenes are made, not found; give how many ({key}=...)")
        return n_bg, n_fg

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


def _sort_key(path: Path) -> tuple:
    """Natural order of the stems (``room2`` before ``room10``), then the full name: a total order, so that
    ``bg1.jpg`` and ``bg01.jpg`` get the same ids whatever order the folder lists them in."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)], path.name


def _shown(names: list[str]) -> str:
    """``names`` joined by commas, the first ``SHOWN_NAMES`` of them."""
    more = len(names) - SHOWN_NAMES
    return ", ".join(names[:SHOWN_NAMES]) + (f", ... ({more} more)" if more > 0 else "")


@dataclass(frozen=True)
class _Listing:
    """A folder's image files in id order, and the names of what was skipped in it (folders end in ``/``)."""

    folder: Path
    files: list[Path]
    skipped: list[str]

    @property
    def skipped_note(self) -> str:
        """``"; skipped: .hidden.jpg, d.gif, sub/"``, or ``""`` when nothing was skipped."""
        return f"; skipped: {_shown(self.skipped)}" if self.skipped else ""

    def describe(self) -> str:
        """``"a.jpg, b.png; skipped: .hidden.jpg, d.gif, sub/"``."""
        return _shown([p.name for p in self.files]) + self.skipped_note


def _list_images(folder: Path, what: str) -> _Listing:
    """The image files of ``folder`` by extension; hidden files (``.name``) and folders are skipped."""
    if not folder.is_dir():
        raise SourceError(f"{what} folder {folder} does not exist")
    files, skipped = [], []
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
            files.append(path)
        else:
            skipped.append(path.name + "/" if path.is_dir() else path.name)
    listing = _Listing(folder, sorted(files, key=_sort_key), sorted(skipped))
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise SourceError(f"{what} folder {folder} holds no images ({suffixes}{listing.skipped_note})")
    stems = [p.stem for p in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise SourceError(f"{what} folder {folder}: several files share the name {duplicates[0]!r}")
    return listing


def _counted(listing: _Listing, wanted: int | None, key: str, what: str) -> list[Path]:
    """The listing's files if there are ``wanted`` of them (None: however many), else an error saying what was
    counted and skipped."""
    if wanted is not None and len(listing.files) != wanted:
        raise SourceError(
            f"{what} folder {listing.folder} holds {len(listing.files)} images ({listing.describe()}), "
            f"the config asks for {wanted} ({key})"
        )
    return listing.files


class ImageFolders:
    """A user's backgrounds and foregrounds, read as they are (16-bit and float images scaled to 8 bits).

    Args:
        bg_dir: background images, any common format; ids follow the natural sort order of the names.
        fg_dir: foregrounds, RGBA with an alpha channel, or RGB when ``mask_dir`` holds a mask of the same name.
        mask_dir: optional grayscale masks (white = foreground) named like the foregrounds, each of its
            foreground's size.
        wrong_size: ``resize`` images that are not 160x160 (backgrounds) / 80x80 (foregrounds), or ``reject`` them.

    Hidden files (``.name``), folders and other extensions are skipped. A fully opaque foreground (pasted
    as a square) and an image resized away from its aspect ratio are warned about, naming the file.
    ``n_bg`` / ``n_fg`` None take every image found; a number must equal what was found.
    """

    def __init__(self, bg_dir: str, fg_dir: str, mask_dir: str | None = None, wrong_size: str = "resize"):
        self.wrong_size = check_choice("source.wrong_size", wrong_size, WRONG_SIZES)
        self.bg_dir, self.fg_dir = Path(bg_dir), Path(fg_dir)
        self.mask_dir = Path(mask_dir) if mask_dir else None

    def _sized(self, image: Image.Image, size: int, path: Path, resample: int) -> Image.Image:
        """``image`` at ``size`` x ``size``: resized (with a warning when that changes its aspect ratio) or,
        with ``wrong_size=reject``, refused when it is not."""
        if image.size == (size, size):
            return image
        if self.wrong_size == "reject":
            raise SourceError(f"{path}: size {_size(image)}, expected {size}x{size}")
        if image.width != image.height:
            log.warning("%s: %s is resized to %dx%d, away from its aspect ratio", path, _size(image), size, size)
        return image.resize((size, size), resample)

    @property
    def dataset_name(self) -> str:
        """The name of ``bg_dir``'s parent folder (``photos/kitchen/backgrounds`` -> ``kitchen``): the default
        output folder's, ``<data_dir>/<name>``. Characters other than letters, digits, ``.``, ``_`` and ``-``
        become ``_`` (``data.data_dir=data/<name>`` then needs no quoting); ``folders`` at a file system's root;
        never a sample dataset's folder (``data/sample``, ``data/sample_small``): ``sample...`` becomes
        ``folders_sample...``."""
        name = re.sub(r"[^\w.-]", "_", self.bg_dir.resolve().parent.name, flags=re.ASCII) or "folders"
        return f"folders_{name}" if name.startswith("sample") else name

    def counts(self, n_bg: int | None, n_fg: int | None) -> tuple[int, int]:
        """``(n_bg, n_fg)``: each None is the number of images in its folder; a number must equal it."""
        bg = _counted(_list_images(self.bg_dir, "background"), n_bg, "n_bg", "background")
        fg = _counted(_list_images(self.fg_dir, "foreground"), n_fg, "n_fg", "foreground")
        return len(bg), len(fg)

    def load(self, n_bg: int | None, n_fg: int | None) -> Scenes:
        bg_files = _counted(_list_images(self.bg_dir, "background"), n_bg, "n_bg", "background")
        fg_files = _counted(_list_images(self.fg_dir, "foreground"), n_fg, "n_fg", "foreground")
        masks = {}
        if self.mask_dir is not None:
            masks = {p.stem: p for p in _list_images(self.mask_dir, "mask").files}
            orphans = sorted(set(masks) - {p.stem for p in fg_files})
            if orphans:
                raise SourceError(f"{masks[orphans[0]]}: mask has no foreground of the same name in {self.fg_dir}")

        bg_rgb = [self._load_background(p) for p in bg_files]
        fg_rgba = [self._load_foreground(p, masks.get(p.stem)) for p in fg_files]
        origin = {
            "source": "folders",
            "bg": {i + 1: p.name for i, p in enumerate(bg_files)},
            "fg": {i + 1: p.name for i, p in enumerate(fg_files)},
        }
        return Scenes(bg_rgb=bg_rgb, fg_rgba=fg_rgba, origin=origin)

    def _load_background(self, path: Path) -> np.ndarray:
        """``(BG_SIZE, BG_SIZE, 3)`` uint8."""
        return np.asarray(self._sized(read_image(path).convert("RGB"), BG_SIZE, path, Image.Resampling.LANCZOS))

    def _load_foreground(self, path: Path, mask_path: Path | None) -> np.ndarray:
        """``(FG_SIZE, FG_SIZE, 4)`` uint8, alpha 0/255 from the mask or the image's own alpha."""
        image = read_image(path)
        if mask_path is not None:
            alpha = read_image(mask_path).convert("L")
            if alpha.size != image.size:
                raise SourceError(
                    f"{mask_path}: the mask is {_size(alpha)} but its foreground {path} is {_size(image)}; "
                    "a mask must have its foreground's size"
                )
        elif "A" in image.getbands() or "transparency" in image.info:
            alpha = image.convert("RGBA").getchannel("A")
        else:
            raise SourceError(f"{path}: no alpha channel and no mask of the same name (set source.mask_dir)")
        rgb = self._sized(image.convert("RGB"), FG_SIZE, path, Image.Resampling.LANCZOS)
        rgba = np.empty((FG_SIZE, FG_SIZE, 4), np.uint8)
        rgba[..., :3] = np.asarray(rgb)
        # A clean cut-out: the composite and the stored mask must agree pixel for pixel.
        rgba[..., 3] = np.where(np.asarray(alpha.resize(rgb.size, Image.Resampling.NEAREST)) >= 128, 255, 0)
        alpha_file = mask_path or path
        if not rgba[..., 3].any():
            raise SourceError(f"{alpha_file}: the mask is empty (no pixel >= 128)")
        if rgba[..., 3].all():
            log.warning("%s: the mask covers the whole image (fully opaque): it is pasted as a square", alpha_file)
        return rgba


def _size(image: Image.Image) -> str:
    return f"{image.width}x{image.height}"
