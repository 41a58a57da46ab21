"""Checks of batch zips beyond their names: within a zip (each composite with its partners), and across the
zips of a selection (each holds only its own foregrounds, their manifests agree, how to label zips without depth)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fgbg.errors import FgbgError
from fgbg.format.names import (
    FG_PER_ZIP,
    MANIFEST,
    SampleId,
    batch_of_fg,
    composite_member,
    fg_ids_of_batch,
    zip_name,
)

log = logging.getLogger(__name__)

# Manifest settings that every zip of one dataset shares (jpeg_quality may differ: it changes no sample's id).
SHARED_SETTINGS = ("seed", "n_bg", "n_fg", "placements", "source", "depth")
# The settings a depth-less sample-scene zip is remade with, so that it stays the same dataset.
_REMAKE_SETTINGS = ("n_bg", "n_fg", "placements", "seed", "jpeg_quality")


class DatasetError(FgbgError, ValueError):
    """A batch zip whose contents cannot be used, or a request the zips cannot meet; names the zip/member."""


def no_depth_message(path: Path, manifest: dict | None) -> str:
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


def in_order_without_duplicates(
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


def missing_partner_message(path: Path, categories: tuple[str, ...], ids_by_category: list[np.ndarray]) -> str:
    """The message for the first sample id (in id order) that one of ``categories`` (of COMPOSITE_CATEGORIES,
    each with its ``(n, 4)`` ids in ``ids_by_category``) lacks."""
    found = [{tuple(row) for row in ids.tolist()} for ids in ids_by_category]
    incomplete = min(set.union(*found) - set.intersection(*found))
    have = [c for c, rows in zip(categories, found) if incomplete in rows]
    missing = [c for c, rows in zip(categories, found) if incomplete not in rows]
    sample = SampleId(*incomplete)
    partner = composite_member(missing[0], sample)
    return f"{path}: {composite_member(sorted(have)[0], sample)!r} has no partner {partner!r}"


def check_foregrounds(batch: int, path: Path, fg_ids: set[int], samples: np.ndarray) -> None:
    """Refuse zip ``batch`` at ``path`` holding a foreground of another batch (among ``fg_ids`` and the
    ``fg`` of its ``samples``): e.g. batch 1 copied to batch 2 (every sample twice)."""
    found = fg_ids | set(np.unique(samples["fg"]).tolist())
    foreign = sorted(fg for fg in found if batch_of_fg(fg) != batch)
    if foreign:
        fg = foreign[0]
        own = fg_ids_of_batch(batch, batch * FG_PER_ZIP)  # all of this batch's ids, whatever the dataset's n_fg
        raise DatasetError(
            f"{path} holds foreground {fg}, which belongs in {path.with_name(zip_name(batch_of_fg(fg)))} "
            f"({path.name} holds foregrounds {own[0]}..{own[-1]}): a copied or renamed zip? "
            "Remove it, or remake the dataset with python generate.py"
        )


class SameDataset:
    """The zips seen so far agree on :data:`SHARED_SETTINGS`; those without a manifest are listed, unchecked."""

    def __init__(self):
        self.first: tuple[Path, dict] | None = None  # the first zip with a manifest, and its settings
        self.unchecked: list[Path] = []

    def add(self, path: Path, manifest: dict | None) -> None:
        """Check ``path``'s ``manifest`` (None: made by another tool) against the first zip's."""
        if manifest is None:
            self.unchecked.append(path)
            return
        settings = manifest.get("settings") or {}
        if self.first is None:
            self.first = path, settings
        _check_same_settings(*self.first, path, settings)

    def setting(self, key: str):
        """The manifests' ``key`` setting (the first one's: the others agree), None when none has it."""
        return self.first[1].get(key) if self.first else None

    def warn_unchecked(self, batches: list[int]) -> None:
        """Warn that zips without a manifest were not checked against the others (of ``batches``)."""
        if self.unchecked and len(batches) > 1:
            log.warning(
                "%s: no %s, so nothing checks that the zips %s were made with the same %s",
                ", ".join(map(str, self.unchecked)), MANIFEST, sorted(batches), ", ".join(SHARED_SETTINGS),
            )


def _check_same_settings(first: Path, first_settings: dict, path: Path, settings: dict) -> None:
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
