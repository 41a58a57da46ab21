"""Small data for tests: a generated dataset, damaged zips, smooth grey images, a batch as the data side makes it."""

import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fgbg.build.batch_zip import Settings
from fgbg.build.generation import generate
from fgbg.build.scene_depth import SceneDepth
from fgbg.build.sources import SampleScenes
from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK

# 12 backgrounds x 12 foregrounds -> batch 1 (fg 1-10) and batch 2 (fg 11-12); 2 placements keep it fast.
SMALL = Settings(n_bg=12, n_fg=12, placements=2, seed=0, jpeg_quality=90)
JPEG_TOLERANCE = 3  # grey levels


def make_dataset(out_dir: Path, settings: Settings = SMALL, depth: bool = True, **kwargs) -> list[Path]:
    """The sample scenes' zips for ``settings`` in ``out_dir``, with exact depth (``depth`` False: none, as
    ``generate.py depth=none`` makes them); the paths written."""
    labeller = SceneDepth() if depth else None
    return generate(SampleScenes(settings.seed), labeller, out_dir, settings, show_progress=False, **kwargs)


def make_mask_only_dataset(out_dir: Path, settings: Settings = SMALL, **kwargs) -> list[Path]:
    """:func:`make_dataset` without depth maps: mask-only data (its two zips for SMALL, the strategies' 40k
    and those of tests/test_index.py apply), e.g. for a session fixture: ``make_mask_only_dataset(out, workers=1)``."""
    return make_dataset(out_dir, settings, depth=False, **kwargs)


def copy_zip(src: Path, dst: Path, drop=(), add=()) -> Path:
    """``src`` copied to ``dst`` without the members named in ``drop``, with ``add``'s ``(name, bytes)``; ``dst``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename not in drop:
                zout.writestr(info, zin.read(info))
        for name, data in add:
            zout.writestr(name, data)
    return dst


def flip_a_byte_inside(path: Path, member: str) -> None:
    """Invert one byte in the middle of ``member``'s data in the zip ``path`` (its directory stays intact)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, "r+b") as raw:
        raw.seek(info.header_offset + 26)  # the local header's file name and extra field lengths
        name_length, extra_length = struct.unpack("<HH", raw.read(4))
        raw.seek(info.header_offset + 30 + name_length + extra_length + info.compress_size // 2)
        byte = raw.read(1)[0]
        raw.seek(-1, os.SEEK_CUR)
        raw.write(bytes([byte ^ 0xFF]))


def grey_levels(width: int, height: int) -> np.ndarray:
    """``(height, width)`` uint8, levels 16..240 along each row: smooth, so JPEG keeps them within JPEG_TOLERANCE."""
    return np.tile(np.linspace(16, 240, width).round().astype(np.uint8), (height, 1))


def fake_batch(batch: int = 2, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch as the data side makes it: a square foreground, brighter and nearer than its background."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.rand(batch, 1, size, size, generator=g).expand(batch, 3, size, size) * 0.5
    mask = torch.zeros(batch, 1, size, size)
    depth = torch.linspace(0, 0.5, size).view(1, 1, size, 1).repeat(batch, 1, 1, size)
    half = size // 2
    for i in range(batch):
        x, y = torch.randint(0, half, (2,), generator=g).tolist()
        mask[i, :, y : y + half, x : x + half] = 1
        depth[i, :, y : y + half, x : x + half] = 0.9
    fg_bg = torch.where(mask.bool(), torch.full_like(bg, 0.8), bg)
    return {BACKGROUND: bg.contiguous(), COMPOSITE: fg_bg, MASK: mask, DEPTH: depth}


def fake_loader(n: int = 4, size: int = 16) -> DataLoader:
    """:func:`fake_batch`'s ``n`` samples, two per batch."""
    batch = fake_batch(n, size)
    samples = [{key: value[i] for key, value in batch.items()} for i in range(n)]
    return DataLoader(samples, batch_size=2)
