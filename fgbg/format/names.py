"""The dataset's naming facts, defined once: folders, file names, zip names and image sizes.

Everything that writes or reads the batch zips (generation, the index, stats, the gallery, tests)
imports these instead of re-typing a pattern. The names are the source document's:

    bg_jpg/bg_img_5.jpg                  background 5 (160x160)
    fg_jpg/fg_img_91.jpg                 foreground 91 (80x80)
    mask_jpg/mask_img_91.jpg             foreground 91's mask (80x80)
    fg_bg_jpg/fg_bg_1_4_0_15.jpg         fg 1 on bg 4, not flipped, placement 15 (1-based)
    mask_black_jpg/bg_mask_1_4_0_15.jpg  that composite's mask on black (160x160)
    depth_fg_bg_jpg/depth_fg_bg_1_4_0_15.jpg  that composite's depth map (160x160)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fgbg.errors import FgbgError

BG_SIZE = 160
FG_SIZE = 80
# Offsets along each axis run over 0..BG_SIZE-FG_SIZE-1, so the foreground always fits inside.
OFFSET_RANGE = BG_SIZE - FG_SIZE
FG_PER_ZIP = 10

BG = "bg_jpg"
FG = "fg_jpg"
MASK = "mask_jpg"
FG_BG = "fg_bg_jpg"
MASK_BLACK = "mask_black_jpg"
DEPTH = "depth_fg_bg_jpg"
CATEGORIES = (BG, FG, FG_BG, MASK, MASK_BLACK, DEPTH)
# Categories with one image per composite, in the order a sample lists them.
COMPOSITE_CATEGORIES = (FG_BG, MASK_BLACK, DEPTH)
MANIFEST = "manifest.json"
# Entries of a zip that are not images: the manifest, and the folder entries that some zip tools add.
NOT_IMAGES = frozenset({MANIFEST, *(f"{category}/" for category in CATEGORIES)})

_SOURCE_PREFIX = {BG: "bg_img", FG: "fg_img", MASK: "mask_img"}
_COMPOSITE_PREFIX = {FG_BG: "fg_bg", MASK_BLACK: "bg_mask", DEPTH: "depth_fg_bg"}
# Ids are positive decimals without leading zeros, at most 9 digits (they fit 32 bits).
_ID = r"[1-9]\d{0,8}"
_SOURCE_RE = re.compile(rf"([a-z_]+)_({_ID})\.jpg", re.ASCII)
_COMPOSITE_RE = re.compile(rf"([a-z_]+?)_({_ID})_({_ID})_([01])_({_ID})\.jpg", re.ASCII)
# Every valid member name, one per line of a text: the same names as parse_member accepts.
_ANY_LINE_RE = re.compile(
    rf"^(?:({'|'.join(f'{c}/{p}' for c, p in _SOURCE_PREFIX.items())})_{_ID}"
    rf"|({'|'.join(f'{c}/{p}' for c, p in _COMPOSITE_PREFIX.items())})_{_ID}_{_ID}_[01]_{_ID})\.jpg$",
    re.ASCII | re.MULTILINE,
)
_CATEGORY_OF_PREFIX = {f"{c}/{p}": CATEGORIES.index(c) for c, p in {**_SOURCE_PREFIX, **_COMPOSITE_PREFIX}.items()}
_ZIP_RE = re.compile(r"^batch([1-9]\d*)_images\.zip$")


class BadNameError(FgbgError, ValueError):
    """A file or zip member whose name is not one of the dataset's names."""


@dataclass(frozen=True, order=True)
class SampleId:
    """One composite: foreground ``fg`` on background ``bg``, ``flip`` 0/1, placement ``k`` (1-based)."""

    fg: int
    bg: int
    flip: int
    k: int

    def stem(self) -> str:
        return f"{self.fg}_{self.bg}_{self.flip}_{self.k}"


def source_member(category: str, image_id: int) -> str:
    """Zip member of a background, foreground or foreground mask: ``bg_jpg/bg_img_5.jpg``."""
    return f"{category}/{_SOURCE_PREFIX[category]}_{image_id}.jpg"


def composite_member(category: str, sample: SampleId) -> str:
    """Zip member of a composite, its mask or its depth: ``fg_bg_jpg/fg_bg_1_4_0_15.jpg``."""
    return f"{category}/{_COMPOSITE_PREFIX[category]}_{sample.stem()}.jpg"


def is_image(member: str) -> bool:
    """Whether a zip member is an image, the one rule for every reader: anything but :data:`NOT_IMAGES`.

    An image whose name is not one of the dataset's is still an image: the index refuses it by name.
    """
    return member not in NOT_IMAGES


def images_by_category(members: list[str]) -> dict[str, list[str]]:
    """The image members (:func:`is_image`) of each of :data:`CATEGORIES`, by their folder, in ``members``' order."""
    found: dict[str, list[str]] = {category: [] for category in CATEGORIES}
    for member in members:
        folder = found.get(member.partition("/")[0])
        if folder is not None and is_image(member):
            folder.append(member)
    return found


def parse_member(member: str) -> tuple[str, int | SampleId]:
    """Turn a zip member name back into ``(category, id)``.

    ``id`` is an ``int`` for bg/fg/mask images and a :class:`SampleId` for the composite
    categories. Anything else (unknown folder, prefix of another folder, zero, missing or
    over-long ids,
    flip other than 0/1, nested or absolute paths) raises :class:`BadNameError`.
    """
    category, sep, filename = member.partition("/")
    if not sep or "/" in filename:
        raise BadNameError(f"{member!r}: expected '<category>/<file>.jpg' with one of {CATEGORIES}")
    if category in _SOURCE_PREFIX:
        match = _SOURCE_RE.fullmatch(filename)
        if match and match.group(1) == _SOURCE_PREFIX[category]:
            return category, int(match.group(2))
        raise BadNameError(f"{member!r}: expected {category}/{_SOURCE_PREFIX[category]}_<id>.jpg")
    if category in _COMPOSITE_PREFIX:
        match = _COMPOSITE_RE.fullmatch(filename)
        if match and match.group(1) == _COMPOSITE_PREFIX[category]:
            fg, bg, flip, k = (int(g) for g in match.groups()[1:])
            return category, SampleId(fg, bg, flip, k)
        raise BadNameError(
            f"{member!r}: expected {category}/{_COMPOSITE_PREFIX[category]}_<fg>_<bg>_<flip 0|1>_<k>.jpg"
        )
    raise BadNameError(f"{member!r}: unknown folder {category!r}, expected one of {CATEGORIES}")


def parse_members(members: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`parse_member` for a whole zip directory at once (a second for 1.2M names one by one).

    Returns ``categories`` ``(N,)`` int8, indices into :data:`CATEGORIES`, and ``ids`` ``(N, 4)`` int64:
    ``(fg, bg, flip, k)`` rows for the composite categories, ``(id, 0, 0, 0)`` for the others. The first
    name that :func:`parse_member` rejects raises its :class:`BadNameError`.
    """
    text = "\n".join(members)
    lines = _ANY_LINE_RE.findall(text)
    if len(lines) != len(members) or text.count("\n") != max(len(members) - 1, 0):
        for member in members:  # some name is not valid: let the one-name parser say which and why
            parse_member(member)
        raise BadNameError(f"a member name holds a line break: {next(m for m in members if chr(10) in m)!r}")
    categories = np.array([_CATEGORY_OF_PREFIX[source or composite] for source, composite in lines], np.int8)
    # Every name is valid, so its digits are its ids and nothing else: 1 number per source, 4 per composite.
    numbers = _decimal_runs(np.frombuffer(text.encode("ascii"), np.uint8))
    composite = np.isin(categories, [CATEGORIES.index(c) for c in COMPOSITE_CATEGORIES])
    counts = np.where(composite, 4, 1)
    first = np.cumsum(counts) - counts
    ids = np.zeros((len(members), 4), np.int64)
    ids[:, 0] = numbers[first]
    for column in range(1, 4):
        ids[composite, column] = numbers[first[composite] + column]
    return categories, ids


def _decimal_runs(text: np.ndarray) -> np.ndarray:
    """Every run of ASCII digits in ``text`` ``(L,)`` uint8 as an int64, in order ``(runs,)``."""
    digit = (text >= ord("0")) & (text <= ord("9"))
    edges = np.diff(digit.view(np.int8), prepend=0, append=0)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return np.zeros(0, np.int64)
    positions = np.flatnonzero(digit)
    lengths = ends - starts
    place = np.repeat(ends, lengths) - positions - 1  # each digit's power of ten within its run
    values = (text[positions] - ord("0")).astype(np.int64) * 10 ** place
    return np.add.reduceat(values, np.cumsum(lengths) - lengths)


def zip_name(batch: int) -> str:
    """``batch1_images.zip`` .. ``batch10_images.zip`` (1-based)."""
    if batch < 1:
        raise ValueError(f"batch numbers start at 1, got {batch}")
    return f"batch{batch}_images.zip"


def parse_zip_name(name: str) -> int:
    """Batch number of a zip file name; raises :class:`BadNameError` for other names."""
    match = _ZIP_RE.match(name)
    if not match:
        raise BadNameError(f"{name!r}: expected batch<N>_images.zip")
    return int(match.group(1))


def batch_of_fg(fg_id: int) -> int:
    """Which batch zip holds foreground ``fg_id``: ids 1-10 -> 1, 11-20 -> 2, ..."""
    return (fg_id - 1) // FG_PER_ZIP + 1


def fg_ids_of_batch(batch: int, n_fg: int) -> range:
    """Foreground ids stored in zip ``batch`` when the dataset has ``n_fg`` foregrounds."""
    first = (batch - 1) * FG_PER_ZIP + 1
    return range(first, min(first + FG_PER_ZIP, n_fg + 1))


def n_batches(n_fg: int) -> int:
    return batch_of_fg(n_fg) if n_fg > 0 else 0
