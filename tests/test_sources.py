import numpy as np
import pytest
from PIL import Image

from fgbg.depth import SceneDepth
from fgbg.generation import Settings, generate
from fgbg.sources import ImageFolders, SourceError


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _rgba(value: int) -> np.ndarray:
    image = np.zeros((80, 80, 4), np.uint8)
    image[20:60, 10:50] = (value, 50, 200, 255)
    return image


@pytest.fixture
def folders(tmp_path):
    for i in (1, 2, 10):  # natural order: 1, 2, 10
        _save(tmp_path / "bg" / f"room{i}.jpg", np.full((160, 160, 3), i * 20, np.uint8))
    _save(tmp_path / "fg" / "a.png", _rgba(100))
    _save(tmp_path / "fg" / "b.png", _rgba(150))
    return tmp_path


def test_rgba_foregrounds_and_any_background_format(folders, tmp_path):
    scenes = ImageFolders(folders / "bg", folders / "fg").load(n_bg=3, n_fg=2)
    assert [b.shape for b in scenes.bg_rgb] == [(160, 160, 3)] * 3
    assert scenes.origin["bg"] == {1: "room1.jpg", 2: "room2.jpg", 3: "room10.jpg"}
    assert set(np.unique(scenes.fg_rgba[0][..., 3])) == {0, 255}
    assert not scenes.has_depth
    written = generate(ImageFolders(folders / "bg", folders / "fg"), None, tmp_path / "out", Settings(3, 2, 2), show_progress=False)
    assert [p.name for p in written] == ["batch1_images.zip"]


def test_rgb_foreground_with_mask_folder_and_resize(tmp_path):
    _save(tmp_path / "bg" / "1.png", np.zeros((200, 300, 3), np.uint8))
    _save(tmp_path / "fg" / "cat.jpg", np.full((40, 40, 3), 90, np.uint8))
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 255
    _save(tmp_path / "mask" / "cat.png", mask)
    scenes = ImageFolders(tmp_path / "bg", tmp_path / "fg", tmp_path / "mask").load(1, 1)
    assert scenes.bg_rgb[0].shape == (160, 160, 3) and scenes.fg_rgba[0].shape == (80, 80, 4)
    assert scenes.fg_rgba[0][..., 3].sum() == 40 * 40 * 255
    with pytest.raises(SourceError, match=r"1.png: size 300x200, expected 160x160"):
        ImageFolders(tmp_path / "bg", tmp_path / "fg", tmp_path / "mask", wrong_size="reject").load(1, 1)


def test_scene_depth_needs_scene_source(folders, tmp_path):
    with pytest.raises(SourceError, match="depth=none"):
        generate(ImageFolders(folders / "bg", folders / "fg"), SceneDepth(), tmp_path / "out", Settings(3, 2, 2), show_progress=False)
    assert not (tmp_path / "out").exists()


def _break_unreadable(root):
    (root / "fg" / "b.png").write_bytes(b"not an image")
    return "b.png: cannot read image"


def _break_no_alpha(root):
    _save(root / "fg" / "b.png", np.zeros((80, 80, 3), np.uint8))
    return "b.png: no alpha channel and no mask"


def _break_count(root):
    (root / "bg" / "room10.jpg").unlink()
    return "holds 2 images, the config asks for 3"


def _break_orphan_mask(root):
    _save(root / "mask" / "a.png", np.full((80, 80), 255, np.uint8))
    _save(root / "mask" / "zzz.png", np.full((80, 80), 255, np.uint8))
    _save(root / "mask" / "b.png", np.full((80, 80), 255, np.uint8))
    return "zzz.png: mask has no foreground of the same name"


def _break_empty_folder(root):
    for path in (root / "fg").iterdir():
        path.unlink()
    return "holds no images"


def _break_duplicate(root):
    _save(root / "fg" / "a.jpg", np.zeros((80, 80, 3), np.uint8))
    return "several files share the name 'a'"


def _break_empty_mask(root):
    _save(root / "fg" / "b.png", np.zeros((80, 80, 4), np.uint8))
    return "b.png: the mask is empty"


@pytest.mark.parametrize(
    "breaker",
    [_break_unreadable, _break_no_alpha, _break_count, _break_orphan_mask, _break_empty_folder, _break_duplicate, _break_empty_mask],
)
def test_bad_input_names_the_file_and_writes_nothing(folders, tmp_path, breaker):
    message = breaker(folders)
    mask_dir = folders / "mask" if (folders / "mask").exists() else None
    with pytest.raises(SourceError, match=message):
        generate(ImageFolders(folders / "bg", folders / "fg", mask_dir), None, tmp_path / "out", Settings(3, 2, 2), show_progress=False)
    assert not (tmp_path / "out").exists()
