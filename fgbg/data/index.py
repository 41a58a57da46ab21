"""From batch zips to samples: one pass over each zip's names, strategies, and the held-out split.

The source document paired files by comparing every name with every fg x bg prefix and then by
directory-listing order, so composites, masks and depths did not line up. Here each member's name is
parsed once into ``(fg, bg, flip, k)`` and the four images of a sample are found by that id.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..names import (
    BG,
    CATEGORIES,
    COMPOSITE_CATEGORIES,
    FG,
    MANIFEST,
    MASK,
    BadNameError,
    SampleId,
    composite_member,
    parse_member,
    zip_name,
)


class DatasetError(ValueError):
    """A batch zip whose contents cannot be used, or a request the zips cannot meet; names the zip/member."""


@dataclass(frozen=True, order=True)
class Sample:
    """One training example: composite ``id`` stored in zip ``batch``."""

    batch: int
    id: SampleId


@dataclass
class ZipContents:
    """What one batch zip holds, by id."""

    path: Path
    bg_ids: set[int] = field(default_factory=set)
    fg_ids: set[int] = field(default_factory=set)
    samples: list[SampleId] = field(default_factory=list)


def index_zip(path: Path) -> ZipContents:
    """Read ``path``'s member names once and group them by sample id.

    Raises :class:`DatasetError` naming the member for a foreign file (any name that is not one of the
    dataset's, including absolute paths and ``..``), a duplicate, or a composite without its mask or depth.
    """
    contents = ZipContents(Path(path))
    partners: dict[SampleId, set[str]] = {}
    seen: set[str] = set()
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetError(f"{path}: not a readable zip ({error})") from error
    for member in names:
        if member == MANIFEST or (member.endswith("/") and member[:-1] in CATEGORIES):
            continue  # the manifest, and the folder entries that some zip tools add
        if member in seen:
            raise DatasetError(f"{path}: duplicate member {member!r}")
        seen.add(member)
        try:
            category, image_id = parse_member(member)
        except BadNameError as error:
            raise DatasetError(f"{path}: foreign member ({error})") from error
        if category == BG:
            contents.bg_ids.add(image_id)
        elif category in (FG, MASK):
            contents.fg_ids.add(image_id)
        else:
            partners.setdefault(image_id, set()).add(category)
    for sample, found in sorted(partners.items()):
        missing = [c for c in COMPOSITE_CATEGORIES if c not in found]
        if missing:
            have = composite_member(sorted(found)[0], sample)
            raise DatasetError(f"{path}: {have!r} has no partner {composite_member(missing[0], sample)!r}")
        if sample.bg not in contents.bg_ids:
            raise DatasetError(f"{path}: composites of background {sample.bg} but no bg_jpg/bg_img_{sample.bg}.jpg")
    contents.samples = sorted(partners)
    return contents


def select(data_dir: Path, strategy: str, strategies: dict) -> tuple[dict[int, Path], list[Sample]]:
    """The samples of ``strategy``: ``{"batches": [1, ...], "n_bg": 10 | None}`` looked up in ``strategies``.

    ``n_bg`` keeps each zip's first ``n_bg`` backgrounds (by id); None keeps all of them.
    Returns ``({batch: zip path}, samples)``.
    """
    if strategy not in strategies:
        raise DatasetError(f"unknown strategy {strategy!r}; known: {', '.join(strategies)}")
    spec = strategies[strategy]
    zips, samples = {}, []
    for batch in spec["batches"]:
        path = Path(data_dir) / zip_name(batch)
        if not path.exists():
            raise DatasetError(
                f"strategy {strategy!r} needs {path}, which does not exist "
                "(make the dataset with `python generate.py`, or point data.data_dir at it)"
            )
        contents = index_zip(path)
        bg_ids = sorted(contents.bg_ids)
        n_bg = spec.get("n_bg") or len(bg_ids)
        if n_bg > len(bg_ids):
            raise DatasetError(f"strategy {strategy!r} needs {n_bg} backgrounds in {path}, which holds {len(bg_ids)}")
        keep = set(bg_ids[:n_bg])
        zips[batch] = path
        samples += [Sample(batch, s) for s in contents.samples if s.bg in keep]
    return zips, samples


def _hold_out(ids: list[int], fractions: tuple[float, float], rng: np.random.Generator) -> tuple[set, set, set]:
    shuffled = [ids[i] for i in rng.permutation(len(ids))]
    n_val, n_test = (max(1, round(f * len(ids))) for f in fractions)
    return set(shuffled[n_val + n_test :]), set(shuffled[:n_val]), set(shuffled[n_val : n_val + n_test])


def split(
    samples: list[Sample],
    val_bg: float = 0.2,
    test_bg: float = 0.2,
    val_fg: float = 0.1,
    test_fg: float = 0.1,
    min_fg_to_split: int = 10,
    seed: int = 0,
) -> tuple[dict[str, list[Sample]], dict]:
    """Seeded train/val/test split in which val and test backgrounds are never seen in training.

    Foregrounds are held out too when the samples have at least ``min_fg_to_split`` of them; samples that
    pair a training background with a held-out foreground (or the reverse) belong to no part.
    Returns ``({"train": [...], "val": [...], "test": [...]}, description)``.
    """
    rng = np.random.default_rng(seed)
    bgs = sorted({s.id.bg for s in samples})
    fgs = sorted({s.id.fg for s in samples})
    if len(bgs) < 3:
        raise DatasetError(f"a held-out split needs at least 3 backgrounds, the selection has {len(bgs)}")
    bg_parts = _hold_out(bgs, (val_bg, test_bg), rng)
    split_fg = len(fgs) >= min_fg_to_split
    fg_parts = _hold_out(fgs, (val_fg, test_fg), rng) if split_fg else (set(fgs),) * 3
    parts = {}
    for name, bg_ids, fg_ids in zip(("train", "val", "test"), bg_parts, fg_parts):
        parts[name] = [s for s in samples if s.id.bg in bg_ids and s.id.fg in fg_ids]
    description = {
        "seed": seed,
        "foregrounds_held_out": split_fg,
        **{f"{n}_bg": sorted(b) for n, b in zip(("train", "val", "test"), bg_parts)},
        **{f"{n}_fg": sorted(f) for n, f in zip(("train", "val", "test"), fg_parts)},
        "counts": {n: len(p) for n, p in parts.items()},
        "unused": len(samples) - sum(len(p) for p in parts.values()),
    }
    return parts, description
