"""From batch zips to samples: one pass over each zip's directory, strategies, and the held-out split.

The source document paired files by comparing every name with every fg x bg prefix and then by
directory-listing order, so composites, masks and depths did not line up. Here the names of a zip's
directory are parsed all at once into ``(category, fg, bg, flip, k)`` and the images of a sample are
found by that id.

Samples are rows of a numpy structured array (:data:`SAMPLE`): ids and where each image lies in its zip,
about 100 bytes a sample and no Python object per sample, so the 400k strategy's index is ~40 MB that
loader workers share with their parent instead of copying (a list of names or objects would be copied
page by page as each worker touches their reference counts).
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fgbg.errors import FgbgError
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
    batch_of_fg,
    composite_member,
    fg_ids_of_batch,
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
    [
        ("batch", "<u2"),
        ("fg", "<u4"),
        ("bg", "<u4"),
        ("flip", "u1"),
        ("k", "<u4"),
        ("members", MEMBER, (len(SAMPLE_IMAGES),)),
    ]
)
_ID_FIELDS = ("fg", "bg", "flip", "k")
# Entries of a zip that are not images: the manifest, and the folder entries that some zip tools add.
_NOT_IMAGES = {MANIFEST, *(f"{category}/" for category in CATEGORIES)}
# Manifest settings that every zip of one dataset shares (jpeg_quality may differ: it changes no sample's id).
SHARED_SETTINGS = ("seed", "n_bg", "n_fg", "placements", "source", "depth")
# The settings a depth-less sample-scene zip is remade with, so that it stays the same dataset.
_REMAKE_SETTINGS = ("n_bg", "n_fg", "placements", "seed", "jpeg_quality")


class DatasetError(FgbgError, ValueError):
    """A batch zip whose contents cannot be used, or a request the zips cannot meet; names the zip/member."""


def sample_id(sample: np.void) -> SampleId:
    """The :class:`SampleId` of one :data:`SAMPLE` row."""
    return SampleId(*(int(sample[name]) for name in _ID_FIELDS))


@dataclass
class ZipContents:
    """What one batch zip holds: its source images' ids, its samples (:data:`SAMPLE`, ``batch`` 0) and its
    manifest (None for a zip made by another tool)."""

    path: Path
    bg_ids: set[int] = field(default_factory=set)
    fg_ids: set[int] = field(default_factory=set)
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, SAMPLE))
    manifest: dict | None = None


def index_zip(path: Path) -> ZipContents:
    """Read ``path``'s directory once and group its members by sample id.

    Raises :class:`DatasetError` naming the member for a foreign file (any name that is not one of the
    dataset's, including absolute paths and ``..``), a duplicate, or a composite without its mask or depth;
    a zip without any depth map is told how to label it.
    """
    path = Path(path)
    try:
        names, members = read_directory(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path}: not a readable zip ({error})") from error
    manifest = _read_manifest(path, names, members)
    images = [i for i, name in enumerate(names) if name not in _NOT_IMAGES]
    if len(images) < len(names):
        names, members = [names[i] for i in images], members[images]
    try:
        categories, ids = parse_members(names)
    except BadNameError as error:
        raise DatasetError(f"{path}: foreign member ({error})") from error
    categories, ids, members = _in_order_without_duplicates(path, names, categories, ids, members)
    of = {c: categories == CATEGORIES.index(c) for c in CATEGORIES}
    fg_ids = set(ids[of[FG] | of[MASK], 0].tolist())
    contents = ZipContents(path, set(ids[of[BG], 0].tolist()), fg_ids, manifest=manifest)
    if of[FG_BG].any() and not of[DEPTH].any():
        raise DatasetError(_no_depth(path, manifest))
    located = [(ids[of[c]], members[of[c]]) for c in COMPOSITE_CATEGORIES]  # each in id order
    sample_ids = located[0][0]
    if not all(np.array_equal(sample_ids, other_ids) for other_ids, _ in located[1:]):
        raise DatasetError(_missing_partner(path, [other_ids for other_ids, _ in located]))
    samples = np.zeros(len(sample_ids), SAMPLE)
    for column, name in enumerate(_ID_FIELDS):
        samples[name] = sample_ids[:, column]
    bg_ids, bg_members = ids[of[BG]], members[of[BG]]
    at = np.minimum(np.searchsorted(bg_ids[:, 0], samples["bg"]), max(len(bg_ids) - 1, 0))
    has_bg = (bg_ids[at, 0] == samples["bg"]) if len(bg_ids) else np.zeros(len(samples), bool)
    if not has_bg.all():
        bg = int(samples["bg"][~has_bg].min())
        raise DatasetError(f"{path}: composites of background {bg} but no {source_member(BG, bg)}")
    samples["members"][:, 0] = bg_members[at]
    for column, (_, located_members) in enumerate(located, start=1):
        samples["members"][:, column] = located_members
    contents.samples = samples
    return contents


def _read_manifest(path: Path, names: list[str], members: np.ndarray) -> dict | None:
    """``path``'s manifest, read at its place in the directory (``names``, ``members`` ``(N,)``): one read,
    where ``zipfile`` would parse the whole directory again. None when the zip has none."""
    if MANIFEST not in names:
        return None
    record = members[names.index(MANIFEST)]
    try:
        manifest = json.loads(MemberReader(path).read(*(int(record[name]) for name in MEMBER.names)))
    except (OSError, zipfile.BadZipFile, ValueError) as error:  # ValueError: not JSON, not UTF-8
        raise DatasetError(
            f"{path}: {MANIFEST} is unreadable ({error}); remake the zip with python generate.py"
        ) from error
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: {MANIFEST} is not a JSON object; remake the zip with python generate.py")
    return manifest


def _no_depth(path: Path, manifest: dict | None) -> str:
    """The message for a zip with composites but no depth map: label them with a teacher, or remake sample
    scenes (``source`` ``sample`` in the manifest, or no manifest to say otherwise) with their exact depth."""
    settings = (manifest or {}).get("settings") or {}
    label = f"python generate.py stage=depth depth=depth_anything_v2_small out_dir={path.parent}"
    message = (
        f"{path}: holds no depth maps (made with depth=none, or before the depth stage); label them with `{label}`"
    )
    source = settings.get("source")
    kind = source.get("source") if isinstance(source, dict) else None
    if kind not in (None, "sample"):
        return message
    same = " ".join(f"{key}={settings[key]}" for key in _REMAKE_SETTINGS if key in settings)
    remake = " ".join(filter(None, ("python generate.py depth=scene", same, f"out_dir={path.parent} overwrite=true")))
    which = "these sample scenes" if kind else "them, if they are the built-in sample scenes,"
    return f"{message}, or remake {which} with their exact depth: `{remake}`"


def _in_order_without_duplicates(
    path: Path, names: list[str], categories: np.ndarray, ids: np.ndarray, members: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``categories`` ``(N,)``, ``ids`` ``(N, 4)`` and ``members`` ``(N,)`` sorted by category, then id (fg,
    bg, flip, k); a member whose category and id repeat another's is refused by name."""
    order = np.lexsort(np.column_stack([categories, ids]).T[::-1])
    categories, ids, members = categories[order], ids[order], members[order]
    repeated = np.flatnonzero((np.diff(categories) == 0) & (np.diff(ids, axis=0) == 0).all(axis=1))
    if len(repeated):
        raise DatasetError(f"{path}: duplicate member {names[order[repeated[0] + 1]]!r}")
    return categories, ids, members


def _missing_partner(path: Path, ids_by_category: list[np.ndarray]) -> str:
    """The message for the first sample id (in id order) that some composite category lacks."""
    found = [{tuple(row) for row in ids.tolist()} for ids in ids_by_category]
    incomplete = min(set.union(*found) - set.intersection(*found))
    have = [c for c, rows in zip(COMPOSITE_CATEGORIES, found) if incomplete in rows]
    missing = [c for c, rows in zip(COMPOSITE_CATEGORIES, found) if incomplete not in rows]
    sample = SampleId(*incomplete)
    return f"{path}: {composite_member(sorted(have)[0], sample)!r} has no partner {composite_member(missing[0], sample)!r}"


def select(data_dir: Path, strategy: str, strategies: dict) -> tuple[dict[int, Path], np.ndarray]:
    """The samples of ``strategy``: ``{"batches": [1, ...], "n_bg": 10 | None}`` looked up in ``strategies``.

    ``n_bg`` keeps each zip's first ``n_bg`` backgrounds (by id); None keeps all of them.
    Returns ``({batch: zip path}, samples)``, samples as :data:`SAMPLE` rows in (batch, id) order.

    The zips must belong together: each holds only the foregrounds its number says (so no sample is in two
    zips), and their manifests agree on :data:`SHARED_SETTINGS`; otherwise :class:`DatasetError` names both
    zips. Zips without a manifest (made by other tools) are used with a warning that this was not checked.
    """
    if strategy not in strategies:
        raise DatasetError(f"unknown strategy {strategy!r}; known: {', '.join(strategies)}")
    spec = strategies[strategy]
    zips, samples = {}, []
    first_settings: tuple[Path, dict] | None = None  # the first zip with a manifest, and its settings
    unchecked = []
    for batch in spec["batches"]:
        path = Path(data_dir) / zip_name(batch)
        if not path.exists():
            raise DatasetError(
                f"strategy {strategy!r} needs {path}, which does not exist "
                "(make the dataset with `python generate.py`, or point data.data_dir at it)"
            )
        contents = index_zip(path)
        _check_foregrounds(batch, contents)
        if contents.manifest is None:
            unchecked.append(path)
        else:
            settings = contents.manifest.get("settings") or {}
            if first_settings is None:
                first_settings = path, settings
            _check_same_dataset(*first_settings, path, settings)
        bg_ids = sorted(contents.bg_ids)
        n_bg = spec.get("n_bg") or len(bg_ids)
        if n_bg > len(bg_ids):
            raise DatasetError(f"strategy {strategy!r} needs {n_bg} backgrounds in {path}, which holds {len(bg_ids)}")
        kept = contents.samples[np.isin(contents.samples["bg"], bg_ids[:n_bg])]
        kept["batch"] = batch
        zips[batch] = path
        samples.append(kept)
    if unchecked and len(zips) > 1:
        log.warning(
            "%s: no %s, so nothing checks that the zips %s were made with the same %s",
            ", ".join(map(str, unchecked)), MANIFEST, sorted(zips), ", ".join(SHARED_SETTINGS),
        )
    return zips, np.concatenate(samples) if samples else np.zeros(0, SAMPLE)


def _check_foregrounds(batch: int, contents: ZipContents) -> None:
    """Refuse a zip holding a foreground of another batch: e.g. batch 1 copied to batch 2 (every sample twice)."""
    found = contents.fg_ids | set(np.unique(contents.samples["fg"]).tolist())
    foreign = sorted(fg for fg in found if batch_of_fg(fg) != batch)
    if foreign:
        fg, path = foreign[0], contents.path
        own = fg_ids_of_batch(batch, batch * FG_PER_ZIP)  # all of this batch's ids, whatever the dataset's n_fg
        raise DatasetError(
            f"{path} holds foreground {fg}, which belongs in {path.with_name(zip_name(batch_of_fg(fg)))} "
            f"({path.name} holds foregrounds {own[0]}..{own[-1]}): a copied or renamed zip? "
            "Remove it, or remake the dataset with python generate.py"
        )


def _check_same_dataset(first: Path, first_settings: dict, path: Path, settings: dict) -> None:
    """Refuse ``path`` when its manifest's settings differ from ``first``'s in one of :data:`SHARED_SETTINGS`
    (settings that either manifest lacks are not compared)."""
    for key in SHARED_SETTINGS:
        if key in first_settings and key in settings:
            differs = _first_difference(key, first_settings[key], settings[key])
            if differs:
                name, expected, found = differs
                raise DatasetError(
                    f"{path} was made with {name}={found!r}, {first} with {name}={expected!r}: zips of one dataset "
                    f"share {', '.join(SHARED_SETTINGS)}; remake one with the other's settings "
                    "(generate.py's batch=<N> writes one zip), or keep one dataset per data.data_dir"
                )


def _first_difference(name: str, a, b) -> tuple[str, object, object] | None:
    """``(dotted name, a's value, b's value)`` of the first place where ``a`` and ``b`` differ, going into
    dicts (a folder source records every file name: the message shows the one that differs), else None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys(), key=str):
            differs = _first_difference(f"{name}.{key}", a.get(key), b.get(key))
            if differs:
                return differs
        return None
    return (name, a, b) if a != b else None


def _hold_out(ids: list[int], fractions: tuple[float, float], rng: np.random.Generator) -> tuple[list, list, list]:
    shuffled = [ids[i] for i in rng.permutation(len(ids))]
    n_val, n_test = (max(1, round(f * len(ids))) for f in fractions)
    return sorted(shuffled[n_val + n_test :]), sorted(shuffled[:n_val]), sorted(shuffled[n_val : n_val + n_test])


def split(
    samples: np.ndarray,
    val_bg: float = 0.2,
    test_bg: float = 0.2,
    val_fg: float = 0.1,
    test_fg: float = 0.1,
    min_fg_to_split: int = 10,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict]:
    """Seeded train/val/test split of :data:`SAMPLE` rows in which val and test backgrounds are never seen in
    training.

    Foregrounds are held out too when the samples have at least ``min_fg_to_split`` of them; samples that
    pair a training background with a held-out foreground (or the reverse) belong to no part.
    Returns ``({"train": rows, "val": rows, "test": rows}, description)``, each part in the samples' order;
    a part left empty raises :class:`DatasetError` with the selection's counts.
    """
    rng = np.random.default_rng(seed)
    bgs = np.unique(samples["bg"]).tolist()
    fgs = np.unique(samples["fg"]).tolist()
    if len(bgs) < 3:
        raise DatasetError(f"a held-out split needs at least 3 backgrounds, the selection has {len(bgs)}")
    bg_parts = _hold_out(bgs, (val_bg, test_bg), rng)
    split_fg = len(fgs) >= min_fg_to_split
    fg_parts = _hold_out(fgs, (val_fg, test_fg), rng) if split_fg else (fgs,) * 3
    parts = {}
    for name, bg_ids, fg_ids in zip(("train", "val", "test"), bg_parts, fg_parts):
        parts[name] = samples[np.isin(samples["bg"], bg_ids) & np.isin(samples["fg"], fg_ids)]
    empty = [name for name, part in parts.items() if not len(part)]
    if empty:
        held_out = {"val_bg": val_bg, "test_bg": test_bg}
        if split_fg:
            held_out.update(val_fg=val_fg, test_fg=test_fg)
        raise DatasetError(
            f"the held-out split leaves no {' and no '.join(empty)} samples: the selection has {len(samples)} "
            f"samples, {len(bgs)} backgrounds and {len(fgs)} foregrounds, and the split holds out "
            f"{', '.join(f'{key}={value}' for key, value in held_out.items())}; use a larger data.strategy or "
            "dataset, or smaller data.split fractions"
        )
    description = {
        "seed": seed,
        "foregrounds_held_out": split_fg,
        **{f"{n}_bg": b for n, b in zip(("train", "val", "test"), bg_parts)},
        **{f"{n}_fg": f for n, f in zip(("train", "val", "test"), fg_parts)},
        "counts": {n: len(p) for n, p in parts.items()},
        "unused": len(samples) - sum(len(p) for p in parts.values()),
    }
    return parts, description
