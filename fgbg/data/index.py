"""From batch zips to samples: one pass over each zip's directory, strategies, and the held-out split.

The source document paired files by comparing every name with every fg x bg prefix and then by
directory-listing order, so composites, masks and depths did not line up. Here the names of a zip's
directory are parsed all at once into ``(category, fg, bg, flip, k)`` and the images of a sample are
found by that id. Zips made with depth=none are mask-only data: their samples have no depth member.

Samples are rows of a numpy structured array (:data:`SAMPLE`): ids and where each image lies in its zip,
about 100 bytes a sample and no Python object per sample, so the 400k strategy's index is ~40 MB that
loader workers share with their parent instead of copying (a list of names or objects would be copied
page by page as each worker touches their reference counts).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fgbg.data.checks import (
    DatasetError,
    SameDataset,
    check_foregrounds,
    in_order_without_duplicates,
    missing_partner_message,
    no_depth_message,
)
from fgbg.errors import ConfigError
from fgbg.format.manifest import decode_manifest
from fgbg.format.names import (
    BG,
    CATEGORIES,
    COMPOSITE_CATEGORIES,
    DEPTH,
    FG,
    FG_BG,
    FG_PER_ZIP,
    MANIFEST,
    MASK,
    BadNameError,
    SampleId,
    is_image,
    parse_members,
    source_member,
    zip_name,
)
from fgbg.format.zipdir import MEMBER, MemberReader, read_directory

log = logging.getLogger(__name__)

# The images of a sample, in the order of ``SAMPLE["members"]``: its background, then COMPOSITE_CATEGORIES.
SAMPLE_IMAGES = (BG, *COMPOSITE_CATEGORIES)
# One sample: its zip (``batch``), its id, and where each of SAMPLE_IMAGES lies in that zip.
SAMPLE = np.dtype(
    [("batch", "<u2"), ("fg", "<u4"), ("bg", "<u4"), ("flip", "u1"), ("k", "<u4")]
    + [("members", MEMBER, (len(SAMPLE_IMAGES),))]
)
_ID_FIELDS = ("fg", "bg", "flip", "k")
PARTS = ("train", "val", "test")


def sample_id(sample: np.void) -> SampleId:
    """The :class:`SampleId` of one :data:`SAMPLE` row."""
    return SampleId(*(int(sample[name]) for name in _ID_FIELDS))


@dataclass
class ZipContents:
    """What one batch zip holds: its source images' ids, its samples (:data:`SAMPLE`, ``batch`` 0), its
    manifest (None for a zip made by another tool) and whether its composites have depth maps (``has_depth``
    False: made with depth=none; the samples' depth member is then left blank)."""

    path: Path
    bg_ids: set[int] = field(default_factory=set)
    fg_ids: set[int] = field(default_factory=set)
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, SAMPLE))
    manifest: dict | None = None
    has_depth: bool = True


def index_zip(path: Path) -> ZipContents:
    """Read ``path``'s directory once and group its members by sample id.

    A zip without any depth map (made with depth=none) is mask-only data: its composites need no depth.
    Raises :class:`DatasetError` naming the member for a foreign file (any name that is not one of the
    dataset's, including absolute paths and ``..``), a duplicate, or a composite without its mask, or without
    its depth when other composites of the zip have theirs.
    """
    path = Path(path)
    try:
        names, members = read_directory(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path}: not a readable zip ({error})") from error
    manifest = _read_manifest(path, names, members)
    images = [i for i, name in enumerate(names) if is_image(name)]
    if len(images) < len(names):
        names, members = [names[i] for i in images], members[images]
    try:
        categories, ids = parse_members(names)
    except BadNameError as error:
        raise DatasetError(f"{path}: foreign member ({error})") from error
    categories, ids, members = in_order_without_duplicates(path, names, categories, ids, members)
    of = {c: categories == CATEGORIES.index(c) for c in CATEGORIES}
    # Some depth maps and not others is a broken zip (the partner check names the member), none is mask-only.
    has_depth = bool(of[DEPTH].any()) or not of[FG_BG].any()
    images = SAMPLE_IMAGES if has_depth else tuple(c for c in SAMPLE_IMAGES if c != DEPTH)
    samples = _samples(path, images, [(ids[of[c]], members[of[c]]) for c in images])
    fg_ids = set(ids[of[FG] | of[MASK], 0].tolist())
    return ZipContents(path, set(ids[of[BG], 0].tolist()), fg_ids, samples, manifest, has_depth)


def _samples(path: Path, images: tuple[str, ...], located: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """:data:`SAMPLE` rows from ``(ids (n, 4), members (n,))`` of each of ``images`` (:data:`SAMPLE_IMAGES`,
    or those without DEPTH), each in id order; :class:`DatasetError` for a composite without its partners or
    its background. An image left out keeps a blank member record."""
    (bg_ids, bg_members), composites = located[0], located[1:]
    sample_ids = composites[0][0]
    if not all(np.array_equal(sample_ids, other_ids) for other_ids, _ in composites[1:]):
        raise DatasetError(missing_partner_message(path, images[1:], [other_ids for other_ids, _ in composites]))
    samples = np.zeros(len(sample_ids), SAMPLE)
    for column, name in enumerate(_ID_FIELDS):
        samples[name] = sample_ids[:, column]
    at = np.minimum(np.searchsorted(bg_ids[:, 0], samples["bg"]), max(len(bg_ids) - 1, 0))
    has_bg = (bg_ids[at, 0] == samples["bg"]) if len(bg_ids) else np.zeros(len(samples), bool)
    if not has_bg.all():
        bg = int(samples["bg"][~has_bg].min())
        raise DatasetError(f"{path}: composites of background {bg} but no {source_member(BG, bg)}")
    samples["members"][:, 0] = bg_members[at]
    for category, (_, located_members) in zip(images[1:], composites):
        samples["members"][:, SAMPLE_IMAGES.index(category)] = located_members
    return samples


def _read_manifest(path: Path, names: list[str], members: np.ndarray) -> dict | None:
    """``path``'s manifest, read at its place in the directory (``names``, ``members`` ``(N,)``): one read,
    where ``zipfile`` would parse the whole directory again. None when the zip has none."""
    if MANIFEST not in names:
        return None
    record = members[names.index(MANIFEST)]
    try:
        return decode_manifest(MemberReader(path).read(*(int(record[name]) for name in MEMBER.names)))
    except (OSError, zipfile.BadZipFile, ValueError) as error:  # ValueError: not JSON, not UTF-8, not an object
        raise DatasetError(
            f"{path}: {MANIFEST} is unreadable ({error}); remake the zip with python generate.py"
        ) from error


class Selection(NamedTuple):
    """The samples of a strategy and what training needs to know of them (:func:`select`).

    ``zips``: ``{batch: zip path}``; ``samples``: :data:`SAMPLE` rows in (batch, id) order, those of the
    strategy's ``held_out_batches`` included; ``has_depth``: every composite has a depth map (False: mask-only
    data, made with depth=none); ``depth_record``: the manifests' ``settings.depth``, how the depth maps were
    made (None when mask-only, or when no zip has a manifest); ``held_out_fg``: the foregrounds of
    ``held_out_batches``, for :func:`split` (None: the strategy has none).
    """

    zips: dict[int, Path]
    samples: np.ndarray
    has_depth: bool
    depth_record: dict | None
    held_out_fg: list[int] | None


def select(data_dir: Path, strategy: str, strategies: dict) -> Selection:
    """The samples of ``strategy``: ``{"batches": [1, ...], "n_bg": 10 | None, "held_out_batches": [2]}``
    (``held_out_batches`` optional) looked up in ``strategies``.

    ``n_bg`` keeps each zip's first ``n_bg`` backgrounds (by id); None keeps all of them. The zips of
    ``held_out_batches``, selected the same way, give the validation and test foregrounds (see :func:`split`).

    The zips must belong together: each holds only the foregrounds its number says (so no sample is in two
    zips), and their manifests agree on :data:`~fgbg.data.checks.SHARED_SETTINGS`; otherwise
    :class:`DatasetError` names both zips. Zips without a manifest (made by other tools) are used with a
    warning that this was not checked. Either every zip has depth maps or none has (mask-only data); a mix is
    refused with how to label those without.
    """
    if strategy not in strategies:
        raise DatasetError(f"unknown strategy {strategy!r}; known: {', '.join(strategies)}")
    spec = strategies[strategy]
    held_out = list(spec.get("held_out_batches") or [])
    both = sorted(set(spec["batches"]) & set(held_out))
    if both:
        raise ConfigError(
            f"data.strategies.{strategy}: batches {both} are in both batches and held_out_batches "
            "(a held-out zip gives validation and test foregrounds only)"
        )
    contents = {}  # each zip's contents, its samples those selected (one zip's whole index at a time)
    for batch in sorted([*spec["batches"], *held_out]):
        found = index_zip(_existing_zip(Path(data_dir), batch, strategy, held_out=batch in held_out))
        check_foregrounds(batch, found.path, found.fg_ids, found.samples)
        contents[batch] = replace(found, samples=_first_backgrounds(found, spec.get("n_bg"), strategy))
        contents[batch].samples["batch"] = batch
        if batch not in held_out:
            _warn_of_fewer_foregrounds(contents[batch], strategy)
    # Before the manifests' check, which would name the depth setting only.
    _check_all_or_no_depth(strategy, list(contents.values()))
    same = SameDataset()
    for found in contents.values():
        same.add(found.path, found.manifest)
    same.warn_unchecked(list(contents))
    samples = np.concatenate([found.samples for found in contents.values()]) if contents else np.zeros(0, SAMPLE)
    held_out_fg = np.unique(samples["fg"][np.isin(samples["batch"], held_out)]).tolist() if held_out else None
    has_depth = all(found.has_depth for found in contents.values())
    zips = {batch: found.path for batch, found in contents.items()}
    return Selection(zips, samples, has_depth, same.setting("depth") if has_depth else None, held_out_fg)


def _check_all_or_no_depth(strategy: str, contents: list[ZipContents]) -> None:
    """Refuse zips with depth maps beside zips without: the first of those without is told how to label it."""
    without = [found for found in contents if not found.has_depth]
    if without and len(without) < len(contents):
        raise DatasetError(
            f"strategy {strategy!r} mixes zips with depth maps and zips without "
            f"({', '.join(found.path.name for found in without)}); train on one kind, or give them all depth: "
            + no_depth_message(without[0].path, without[0].manifest)
        )


def _existing_zip(data_dir: Path, batch: int, strategy: str, held_out: bool = False) -> Path:
    """``data_dir``'s zip of ``batch``, which ``strategy`` trains on (or, ``held_out``, validates and tests on)."""
    path = data_dir / zip_name(batch)
    if not path.exists():
        role = "holds out the foregrounds of" if held_out else "needs"
        make = (
            "`make sample` makes it for the small sample (remove an older one-zip sample first), "
            "`python generate.py` for the full dataset"
            if held_out
            else "make the dataset with `python generate.py`"
        )
        raise DatasetError(
            f"strategy {strategy!r} {role} {path}, which does not exist ({make}, or point data.data_dir at it)"
        )
    return path


def _first_backgrounds(contents: ZipContents, n_bg: int | None, strategy: str) -> np.ndarray:
    """The samples of ``contents`` on its first ``n_bg`` backgrounds by id (None: all of them)."""
    bg_ids = sorted(contents.bg_ids)
    n_bg = n_bg or len(bg_ids)
    if n_bg > len(bg_ids):
        raise DatasetError(
            f"strategy {strategy!r} needs {n_bg} backgrounds in {contents.path}, which holds {len(bg_ids)}"
        )
    return contents.samples[np.isin(contents.samples["bg"], bg_ids[:n_bg])]


def _warn_of_fewer_foregrounds(contents: ZipContents, strategy: str) -> None:
    """Warn, with the numbers, when a zip the strategy trains on holds fewer foregrounds than a full zip
    (``FG_PER_ZIP``): the strategy then gives fewer samples than its name says (a user's dataset of 6 foregrounds)."""
    n_fg = len(np.unique(contents.samples["fg"]))
    if 0 < n_fg < FG_PER_ZIP:
        full = round(len(contents.samples) / n_fg * FG_PER_ZIP)
        log.warning(
            f"strategy {strategy!r}: {contents.path} holds {n_fg} foregrounds, not the {FG_PER_ZIP} of a full zip: "
            f"using those {n_fg} ({len(contents.samples):,} samples from it, not {full:,})"
        )


def _hold_out(ids: list[int], fractions: tuple[float, float], rng: np.random.Generator) -> tuple[list, list, list]:
    shuffled = [ids[i] for i in rng.permutation(len(ids))]
    n_val, n_test = (max(1, round(f * len(ids))) for f in fractions)
    return sorted(shuffled[n_val + n_test :]), sorted(shuffled[:n_val]), sorted(shuffled[n_val : n_val + n_test])


def _share_out(
    ids: list[int], held_out: list[int], fractions: tuple[float, float], rng: np.random.Generator
) -> tuple[list, list, list]:
    """``(train, val, test)`` ids: ``held_out`` shared between val and test in proportion ``fractions`` (at least
    one each; equal shares when both are 0), training the rest of ``ids``."""
    held_out = sorted(set(held_out))
    if len(held_out) < 2:
        raise DatasetError(
            f"the strategy's held_out_batches hold {len(held_out)} foreground(s) {held_out}: validation and test "
            "need one each; hold out a zip with more foregrounds"
        )
    shuffled = [held_out[i] for i in rng.permutation(len(held_out))]
    total = sum(fractions)
    n_val = min(max(1, round(len(held_out) * (fractions[0] / total if total else 0.5))), len(held_out) - 1)
    return sorted(set(ids) - set(held_out)), sorted(shuffled[:n_val]), sorted(shuffled[n_val:])


def split(
    samples: np.ndarray,
    val_bg: float = 0.2,
    test_bg: float = 0.2,
    val_fg: float = 0.1,
    test_fg: float = 0.1,
    min_fg_to_split: int = 10,
    seed: int = 0,
    *,
    held_out_fg: list[int] | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Seeded train/val/test split of :data:`SAMPLE` rows in which val and test backgrounds are never seen in
    training. The defaults are ``conf/data/default.yaml``'s ``split`` (a test holds them equal).

    Foregrounds are held out too when the samples have at least ``min_fg_to_split`` of them; samples that
    pair a training background with a held-out foreground (or the reverse) belong to no part.
    ``held_out_fg`` (a strategy's held-out zips' foregrounds, :attr:`Selection.held_out_fg`) are instead the
    only val and test foregrounds, shared between them as ``val_fg : test_fg`` (at least one each), whatever
    ``min_fg_to_split``: training takes every other foreground.
    Returns ``({"train": rows, "val": rows, "test": rows}, description)``, each part in the samples' order;
    a part left empty raises :class:`DatasetError` with the selection's counts.
    """
    rng = np.random.default_rng(seed)
    bgs = np.unique(samples["bg"]).tolist()
    fgs = np.unique(samples["fg"]).tolist()
    if len(bgs) < 3:
        raise DatasetError(f"a held-out split needs at least 3 backgrounds, the selection has {len(bgs)}")
    bg_parts = _hold_out(bgs, (val_bg, test_bg), rng)
    split_fg = held_out_fg is not None or len(fgs) >= min_fg_to_split
    if held_out_fg is not None:
        fg_parts = _share_out(fgs, held_out_fg, (val_fg, test_fg), rng)
    else:
        fg_parts = _hold_out(fgs, (val_fg, test_fg), rng) if split_fg else (fgs,) * 3
    parts = {}
    for name, bg_ids, fg_ids in zip(PARTS, bg_parts, fg_parts):
        parts[name] = samples[np.isin(samples["bg"], bg_ids) & np.isin(samples["fg"], fg_ids)]
    held_out = {"val_bg": val_bg, "test_bg": test_bg, **({"val_fg": val_fg, "test_fg": test_fg} if split_fg else {})}
    _check_not_empty(parts, samples, held_out)
    description = {
        "seed": seed,
        "foregrounds_held_out": split_fg,
        **{f"{n}_bg": b for n, b in zip(PARTS, bg_parts)},
        **{f"{n}_fg": f for n, f in zip(PARTS, fg_parts)},
        "counts": {n: len(p) for n, p in parts.items()},
        "unused": len(samples) - sum(len(p) for p in parts.values()),
    }
    return parts, description


def _check_not_empty(parts: dict[str, np.ndarray], samples: np.ndarray, held_out: dict[str, float]) -> None:
    """:class:`DatasetError` with the selection's counts and the fractions ``held_out`` when a part is empty."""
    empty = [name for name, part in parts.items() if not len(part)]
    if empty:
        n_bg, n_fg = len(np.unique(samples["bg"])), len(np.unique(samples["fg"]))
        raise DatasetError(
            f"the held-out split leaves no {' and no '.join(empty)} samples: the selection has {len(samples)} "
            f"samples, {n_bg} backgrounds and {n_fg} foregrounds, and the split holds out "
            f"{', '.join(f'{key}={value}' for key, value in held_out.items())}; use a larger data.strategy or "
            "dataset, or smaller data.split fractions"
        )


def held_out_parts(description: dict) -> str:
    """``"<backgrounds> bg / <foregrounds> fg"`` the test part of a :func:`split` ``description`` holds, ``seen``
    marking foregrounds also trained on (a selection with too few to hold any out)."""
    seen = "" if description["foregrounds_held_out"] else " (seen in training)"
    return f"{len(description['test_bg'])} bg / {len(description['test_fg'])} fg{seen}"
