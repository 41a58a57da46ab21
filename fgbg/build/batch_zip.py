"""One batch zip of the dataset: its foregrounds and masks, the backgrounds, then every composite of its
foregrounds with its mask (and scene depth), then the manifest; members in that order, byte-reproducible."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fgbg.build.compose import check_placements, flip_horizontal, mask_on_black, paste, placements
from fgbg.build.scene_depth import SceneDepth
from fgbg.build.sources import Scenes
from fgbg.errors import check_int, check_seed
from fgbg.format.names import (
    BG,
    BG_SIZE,
    DEPTH,
    FG,
    FG_BG,
    MASK,
    MASK_BLACK,
    SampleId,
    composite_member,
    fg_ids_of_batch,
    source_member,
    zip_name,
)
from fgbg.format.writer import BatchWriter, atomic_zip

PROGRESS_EVERY = 500  # composites between progress reports


@dataclass(frozen=True)
class Settings:
    """What decides a dataset's bytes (with the source and the depth labeller).

    Set in ``conf/generate.yaml``; the defaults here are that file's values (a test holds them equal).
    """

    n_bg: int = 100
    n_fg: int = 100
    placements: int = 20
    seed: int = 0
    jpeg_quality: int = 90

    def check(self) -> None:
        """:class:`~fgbg.errors.ConfigError` naming the first setting of the wrong type or out of range."""
        check_int("n_bg", self.n_bg, 1)
        check_int("n_fg", self.n_fg, 1)
        check_placements(self.placements)
        check_seed(self.seed)
        check_int("jpeg_quality", self.jpeg_quality, 1, 100)

    def composites_per_batch(self, batch: int) -> int:
        return len(fg_ids_of_batch(batch, self.n_fg)) * 2 * self.n_bg * self.placements


@dataclass(frozen=True)
class Job:
    """What every zip of one run is made from: the scenes, their depth (None: composites without depth
    maps), the settings, the output folder, and the manifest's record of them (``settings``, ``versions``)."""

    scenes: Scenes
    depth: SceneDepth | None
    settings: Settings
    out_dir: Path
    record: dict


def write_batch(batch: int, job: Job, progress: Callable[[int], None] = lambda n: None) -> Path:
    """Write ``batch<batch>_images.zip`` into ``job.out_dir`` atomically and return its path."""
    path = job.out_dir / zip_name(batch)
    fg_ids = list(fg_ids_of_batch(batch, job.settings.n_fg))
    with atomic_zip(path, job.settings.jpeg_quality) as writer:
        _write_sources(writer, job, fg_ids)
        _write_composites(writer, job, fg_ids, progress)
        writer.write_manifest(_manifest(batch, job, fg_ids))
    return path


def _write_sources(writer: BatchWriter, job: Job, fg_ids: list[int]) -> None:
    """The foregrounds of ``fg_ids`` and their masks, then every background."""
    scenes = job.scenes
    for fg in fg_ids:
        writer.write_image(source_member(FG, fg), _fg_background(scenes.fg_rgba[fg - 1]))
        writer.write_image(source_member(MASK, fg), scenes.fg_rgba[fg - 1][..., 3])
    for bg in range(1, job.settings.n_bg + 1):
        writer.write_image(source_member(BG, bg), scenes.bg_rgb[bg - 1])


def _fg_background(rgba: np.ndarray) -> np.ndarray:
    """The foreground ``(S, S, 4)`` as a JPEG can hold it: ``(S, S, 3)`` RGB, transparent pixels white."""
    return np.where(rgba[..., 3:] > 0, rgba[..., :3], 255).astype(np.uint8)


def _write_composites(writer: BatchWriter, job: Job, fg_ids: list[int], progress: Callable[[int], None]) -> None:
    """Every composite of ``fg_ids`` (flipped and not) on every background, reporting ``progress`` as it goes."""
    bg_depth_u8 = [job.depth.encode(d) for d in job.scenes.bg_depth] if job.depth else None
    done = 0
    for fg in fg_ids:
        sides = [_side(job, fg, flip) for flip in (0, 1)]  # once per foreground, not once per background
        for bg in range(1, job.settings.n_bg + 1):
            for flip, side in enumerate(sides):
                done += _write_placements(writer, job, (fg, bg, flip), side, bg_depth_u8)
                if done >= PROGRESS_EVERY:
                    progress(done)
                    done = 0
    progress(done)


def _side(job: Job, fg: int, flip: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Foreground ``fg`` as it is pasted, flipped or not: colour ``(S, S, 3)``, mask ``(S, S)``, relief (None
    without depth)."""
    rgba, relief = job.scenes.fg_rgba[fg - 1], job.scenes.fg_relief[fg - 1] if job.depth else None
    if flip:
        rgba, relief = flip_horizontal(rgba), flip_horizontal(relief) if job.depth else None
    return rgba[..., :3], rgba[..., 3] > 0, relief


def _write_placements(
    writer: BatchWriter, job: Job, pair: tuple[int, int, int], side: tuple, bg_depth_u8: list | None
) -> int:
    """The composites (masks, depth maps) of foreground ``fg`` on background ``bg``, flipped or not, at each
    seeded placement; ``side``: the foreground as :func:`_side` gives it; ``bg_depth_u8``: each background's
    encoded depth ``(BG_SIZE, BG_SIZE)``. Returns how many."""
    fg, bg, flip = pair
    rgb, mask, relief = side
    size = mask.shape[0]
    offsets = placements(job.settings.seed, fg, bg, flip, job.settings.placements)
    for k, (x, y) in enumerate(offsets, start=1):
        sample = SampleId(fg, bg, flip, k)
        writer.write_image(composite_member(FG_BG, sample), paste(job.scenes.bg_rgb[bg - 1], rgb, mask, x, y))
        writer.write_image(composite_member(MASK_BLACK, sample), mask_on_black(mask, x, y, BG_SIZE))
        if job.depth:
            under = job.scenes.bg_depth[bg - 1][y : y + size, x : x + size]
            fg_u8 = job.depth.encode(job.depth.foreground_depth(under, relief, mask))
            writer.write_image(composite_member(DEPTH, sample), paste(bg_depth_u8[bg - 1], fg_u8, mask, x, y))
    return len(offsets)


def _manifest(batch: int, job: Job, fg_ids: list[int]) -> dict:
    """The zip's manifest: its batch, foregrounds, member counts per category, and the run's record."""
    n = len(fg_ids) * 2 * job.settings.n_bg * job.settings.placements
    counts = {FG: len(fg_ids), MASK: len(fg_ids), BG: job.settings.n_bg, FG_BG: n, MASK_BLACK: n}
    counts[DEPTH] = n if job.depth else 0
    return {"batch": batch, "fg_ids": fg_ids, "counts": counts, **job.record}
