"""The source document's table: mean and std of the pixels of each category, in one pass over the zips.

    python -m fgbg.tools.stats data/sample --out conf/data/stats/mine.yaml [--limit 100] [--gray]
    python train.py data/stats=mine data.normalize=true

Pixels are read as stored (full size), scaled to [0, 1]: bg/fg/fg_bg in colour, one mean and std over
all three channels (the document's table has one per category), or as grey with ``--gray`` (what
``data.grayscale=true`` feeds the model); masks and depth maps are grey. Sums of the uint8 values and
of their squares are integers, so the result is exact and does not depend on the order of the images.
The output is the format of ``conf/data/stats/document.yaml``: ``category: {mean: .., std: ..}``.
"""

from __future__ import annotations

import argparse
import logging
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import simplejpeg

from fgbg.format.names import BG, CATEGORIES, FG, FG_BG, images_by_category
from fgbg.format.zips import batch_zips
from fgbg.progress import progress

COLOUR = (BG, FG, FG_BG)


def members(zf: zipfile.ZipFile) -> dict[str, list[str]]:
    """A zip's image members by category, in archive order (:func:`~fgbg.format.names.images_by_category`)."""
    return images_by_category(zf.namelist())


def decode(data: bytes, category: str, gray: bool = False) -> np.ndarray:
    """JPEG bytes -> uint8 pixels as stored: ``(H, W, 3)`` for colour categories unless ``gray``, else ``(H, W, 1)``."""
    colour = category in COLOUR and not gray
    return simplejpeg.decode_jpeg(data, colorspace="RGB" if colour else "GRAY")


def _images(zips: list[Path], limit: int | None) -> Iterator[tuple[str, bytes]]:
    for path in zips:
        with zipfile.ZipFile(path) as zf:
            for category, names in members(zf).items():
                for name in names[:limit]:
                    yield category, zf.read(name)


def _count(zips: list[Path], limit: int | None) -> int:
    """How many images :func:`_images` yields (reading the zips' directories only)."""
    total = 0
    for path in zips:
        with zipfile.ZipFile(path) as zf:
            total += sum(len(names[:limit]) for names in members(zf).values())
    return total


def category_stats(
    zips: list[Path], gray: bool = False, limit: int | None = None, show_progress: bool = False
) -> dict[str, dict[str, float]]:
    """``{category: {"mean": m, "std": s}}`` of pixels in [0, 1] (population std) over ``zips``.

    ``limit``: at most that many images per category per zip (a quick subsample), else all of them.
    Categories without images are left out.
    """
    sums = {category: [0, 0, 0] for category in CATEGORIES}  # pixel count, sum, sum of squares
    images = _images(zips, limit)
    if show_progress:
        images = progress(images, total=_count(zips, limit), desc=f"reading {len(zips)} zip(s)", unit="image")
    for category, data in images:
        pixels = decode(data, category, gray).astype(np.int64)
        total = sums[category]
        total[0] += pixels.size
        total[1] += int(pixels.sum())
        total[2] += int((pixels * pixels).sum())
    stats = {}
    for category, (n, s, q) in sorted(sums.items()):
        if n:
            # Exact integer variance first: n * q - s * s == n**2 * var(uint8 values).
            stats[category] = {"mean": s / n / 255, "std": math.sqrt(n * q - s * s) / n / 255}
    return stats


def write_stats(stats: dict[str, dict[str, float]], path: str | Path, comment: str = "") -> None:
    """``stats`` as ``conf/data/stats/document.yaml`` lays it out, rounded to 6 decimals, after a ``# comment``."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{category}: {{mean: {v['mean']:.6f}, std: {v['std']:.6f}}}" for category, v in stats.items()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fgbg.tools.stats", description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", help="folder holding batch<N>_images.zip")
    parser.add_argument("--out", required=True, help="YAML to write, e.g. conf/data/stats/mine.yaml")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per category per zip")
    parser.add_argument("--gray", action="store_true", help="read colour images as grey (data.grayscale=true)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress lines when output is not a terminal
    zips = list(batch_zips(args.data_dir).values())
    stats = category_stats(zips, gray=args.gray, limit=args.limit, show_progress=True)
    read = "grey" if args.gray else "colour"
    subsample = f", at most {args.limit} images per category per zip" if args.limit else ""
    comment = f"python -m fgbg.tools.stats: {len(zips)} zip(s) in {args.data_dir}, bg/fg/fg_bg read in {read}{subsample}."
    write_stats(stats, args.out, comment)
    for category, values in stats.items():
        print(f"Category : {category:<16} Mean : {values['mean']:.6f},  Std : {values['std']:.6f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
