import io
import zipfile

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from fgbg.format.names import CATEGORIES, parse_member
from fgbg.format.zips import batch_zips
from fgbg.tools.stats import category_stats, main
from tests.helpers.paths import CONF_DIR


def _numpy_stats(data_dir, limit=None, gray=False) -> dict[str, dict[str, float]]:
    """The reference: every image decoded by PIL, all of a category's pixels in one float64 array."""
    pixels = {category: [] for category in CATEGORIES}
    for path in sorted(data_dir.glob("batch*_images.zip")):
        with zipfile.ZipFile(path) as zf:
            names = {category: [] for category in CATEGORIES}
            for name in zf.namelist():
                if name.endswith(".jpg"):
                    names[parse_member(name)[0]].append(name)
            for category, members in names.items():
                for name in members[:limit]:
                    image = Image.open(io.BytesIO(zf.read(name)))
                    if gray:
                        image.draft("L", image.size)  # the JPEG's own luma, as the stats command reads it
                    pixels[category].append(np.asarray(image, dtype=np.float64).ravel() / 255)
    together = {category: np.concatenate(arrays) for category, arrays in pixels.items()}
    return {category: {"mean": a.mean(), "std": a.std()} for category, a in together.items()}


@pytest.fixture(scope="module")
def reference(small_dataset) -> dict[str, dict[str, float]]:
    return _numpy_stats(small_dataset)


def test_stats_match_numpy(small_dataset, reference):
    got = category_stats(list(batch_zips(small_dataset).values()))
    assert set(got) == set(CATEGORIES)
    for category in CATEGORIES:
        assert got[category] == pytest.approx(reference[category], abs=1e-4), category


def test_subsample_in_grey_matches_numpy(small_dataset):
    got = category_stats(list(batch_zips(small_dataset).values()), gray=True, limit=3)
    expected = _numpy_stats(small_dataset, limit=3, gray=True)
    for category in CATEGORIES:
        assert got[category] == pytest.approx(expected[category], abs=1e-4), category


def test_command_writes_the_document_tables_format(small_dataset, reference, tmp_path, capsys):
    out = tmp_path / "mine.yaml"
    main([str(small_dataset), "--out", str(out)])
    written = OmegaConf.to_container(OmegaConf.load(out))
    document = OmegaConf.load(CONF_DIR / "data" / "stats" / "document.yaml")
    assert list(written) == sorted(document) and all(set(v) == {"mean", "std"} for v in written.values())
    for category, values in written.items():
        assert values == pytest.approx(reference[category], abs=1e-4)
    assert "Category : fg_bg_jpg" in capsys.readouterr().out


def test_no_zips_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no batch"):
        batch_zips(tmp_path)
