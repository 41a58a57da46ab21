import zipfile

import numpy as np
from PIL import Image

from fgbg.format.names import BG_SIZE, CATEGORIES, FG, FG_BG, FG_SIZE, MASK, MASK_BLACK, parse_member
from fgbg.format.zips import batch_zips
from fgbg.tools.gallery import CAPTION, PADDING, TITLE, gallery, main, pick
from fgbg.tools.stats import decode, members
from tests.helpers.paths import ROOT


def _candidates(data_dir, category):
    found = []
    for path in batch_zips(data_dir).values():
        with zipfile.ZipFile(path) as zf:
            found += [(path, name) for name in members(zf)[category]]
    return found


def _ids(chosen):
    return [parse_member(member)[1] for _, member in chosen]


def test_one_png_per_category_showing_the_drawn_images(small_dataset, tmp_path):
    written = gallery(small_dataset, tmp_path, n=5, columns=3)
    assert [p.name for p in written] == [f"{c}.png" for c in CATEGORIES]
    for category in CATEGORIES:
        side = FG_SIZE if category in (FG, MASK) else BG_SIZE
        with Image.open(tmp_path / f"{category}.png") as png:
            image = np.asarray(png.convert("RGB"))
        # 5 images, 3 columns -> 2 rows, below the title.
        assert image.shape == (TITLE + PADDING + 2 * (side + CAPTION + PADDING), PADDING + 3 * (side + PADDING), 3)
        # The last image drawn sits in row 2, column 2, pixel for pixel.
        path, member = pick(_candidates(small_dataset, category), 5)[-1]
        with zipfile.ZipFile(path) as zf:
            pixels = decode(zf.read(member), category)
        top, left = TITLE + PADDING + (side + CAPTION + PADDING), PADDING + (side + PADDING)
        tile = image[top : top + side, left : left + side]
        assert np.array_equal(tile, np.broadcast_to(pixels, tile.shape)), category


def test_draws_are_seeded_and_match_across_a_composites_categories(small_dataset):
    composites = _candidates(small_dataset, FG_BG)
    assert pick(composites, 6, seed=1) == pick(composites, 6, seed=1) != pick(composites, 6, seed=2)
    assert _ids(pick(composites, 6)) == _ids(pick(_candidates(small_dataset, MASK_BLACK), 6))


def test_the_command_writes_a_new_run_folder_unless_told_where(small_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FGBG_ROOT", str(tmp_path))
    docs = sorted(ROOT.glob("docs/gallery/*.png"))
    before = [p.stat().st_mtime_ns for p in docs]
    main([str(small_dataset), "--n", "1"])
    [run] = (tmp_path / "outputs" / "gallery").iterdir()
    assert sorted(p.name for p in run.iterdir()) == sorted(f"{c}.png" for c in CATEGORIES)
    assert capsys.readouterr().out.splitlines()[0].startswith(str(run))
    assert [p.stat().st_mtime_ns for p in docs] == before  # the README's tracked galleries are left alone
    main([str(small_dataset), "--n", "1", "--out", str(tmp_path / "mine")])
    assert len(list((tmp_path / "mine").glob("*.png"))) == len(CATEGORIES)
