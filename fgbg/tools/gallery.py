"""A PNG gallery per category: a titled grid of samples, the source document's GalleryUtil as a command.

    python -m fgbg.tools.gallery data/sample [--out <folder>] [--n 8] [--columns 4] [--seed 0]

writes ``<out>/<category>.png`` for each category (``bg_jpg.png``, ``fg_bg_jpg.png``, ...): ``n`` images
drawn at random (seeded) from all the zips, each captioned with its id, shown at their stored size. The
galleries of a composite, its mask and its depth show the same samples in the same places. ``out`` is a new run
folder ``<paths.log_dir>/gallery/<time>`` unless given: only ``--out docs/gallery`` updates the README's
(tracked files).
"""

from __future__ import annotations

import argparse
import random
import zipfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from fgbg.format.names import CATEGORIES, COMPOSITE_CATEGORIES, parse_member
from fgbg.format.zips import batch_zips
from fgbg.run_dirs import new_run_dir
from fgbg.tools.stats import decode, members

# Where the entry points' run folders go (paths.log_dir), read from there: the project's conf/ beside this package.
PATHS_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "paths" / "default.yaml"
PADDING = 6
CAPTION = 12
TITLE = 18


def pick(candidates: list[tuple[Path, str]], n: int, seed: int = 0) -> list[tuple[Path, str]]:
    """``n`` of ``(zip, member)`` ``candidates`` drawn without replacement (seeded), in zip and id order.

    The draw is made over the candidates in that order, so categories holding the same ids (a composite,
    its mask and its depth; a foreground and its mask) show the same samples.
    """
    ordered = sorted(candidates, key=lambda item: (str(item[0]), parse_member(item[1])[1]))
    return [ordered[i] for i in sorted(random.Random(seed).sample(range(len(ordered)), min(n, len(ordered))))]


def caption(member: str) -> str:
    """``fg_bg_jpg/fg_bg_1_4_0_15.jpg`` -> ``1_4_0_15`` (fg_bg_flip_k); ``bg_jpg/bg_img_5.jpg`` -> ``5``."""
    _, image_id = parse_member(member)
    return str(image_id) if isinstance(image_id, int) else image_id.stem()


def render(images: list[np.ndarray], captions: list[str], title: str, columns: int) -> Image.Image:
    """Equal-sized uint8 ``(H, W, 3 | 1)`` images -> one RGB grid on white, ``columns`` wide, a title on top
    and each image's caption under it."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    cell_w, cell_h = w + PADDING, h + CAPTION + PADDING
    sheet = Image.new("RGB", (PADDING + columns * cell_w, TITLE + PADDING + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((PADDING, 3), title, fill="black")
    for i, (pixels, text) in enumerate(zip(images, captions)):
        x, y = PADDING + (i % columns) * cell_w, TITLE + PADDING + (i // columns) * cell_h
        sheet.paste(Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).convert("RGB"), (x, y))
        draw.rectangle((x - 1, y - 1, x + w, y + h), outline="lightgray")  # white foreground edges stay visible
        draw.text((x, y + h + 1), text, fill="dimgray")
    return sheet


def gallery(data_dir: str | Path, out_dir: str | Path, n: int = 8, columns: int = 4, seed: int = 0) -> list[Path]:
    """Write ``<out_dir>/<category>.png`` for every category found in ``data_dir``'s zips; return the paths."""
    out_dir, written = Path(out_dir), []
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        handles = {path: stack.enter_context(zipfile.ZipFile(path)) for path in batch_zips(data_dir).values()}
        found: dict[str, list[tuple[Path, str]]] = {category: [] for category in CATEGORIES}
        for path, zf in handles.items():
            for category, names in members(zf).items():
                found[category] += [(path, name) for name in names]
        for category, candidates in found.items():
            chosen = pick(candidates, n, seed)
            if not chosen:
                continue
            images = [decode(handles[path].read(member), category) for path, member in chosen]
            key = "fg_bg_flip_k" if category in COMPOSITE_CATEGORIES else "id"
            title = f"{category}: {len(chosen)} of {len(candidates)}, captioned by {key}"
            path = out_dir / f"{category}.png"
            render(images, [caption(member) for _, member in chosen], title, columns).save(path, optimize=True)
            written.append(path)
    return written


def default_out() -> Path:
    """A new run folder ``<paths.log_dir>/gallery/<time>``, as the entry points make theirs (conf/hydra/default.yaml)."""
    paths = OmegaConf.create({"paths": OmegaConf.load(PATHS_CONFIG)}).paths
    return Path(new_run_dir(Path(paths.log_dir) / "gallery"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fgbg.tools.gallery", description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", help="folder holding batch<N>_images.zip")
    parser.add_argument("--out", help="folder for <category>.png (default: a new <paths.log_dir>/gallery/<time>)")
    parser.add_argument("--n", type=int, default=8, help="images per gallery")
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="which images are drawn")
    args = parser.parse_args(argv)
    for path in gallery(args.data_dir, args.out or default_out(), args.n, args.columns, args.seed):
        print(path)


if __name__ == "__main__":
    main()
