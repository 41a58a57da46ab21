import io
import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import HydraException
from hydra.utils import instantiate
from PIL import Image

import fgbg.run_dirs  # noqa: F401  (registers ${fgbg.cwd:}, which paths.data_dir reads, as the entry points do)
from fgbg.build.batch_zip import Settings
from fgbg.build.generation import generate
from fgbg.build.scene_depth import SceneDepth
from fgbg.build.sources import ImageFolders, SampleScenes, SourceError
from fgbg.errors import ConfigError, FgbgError
from fgbg.format.images import ImageError
from fgbg.format.manifest import read_manifest
from fgbg.format.names import BG, source_member
from tests.helpers.configs import compose_config
from tests.helpers.data import JPEG_TOLERANCE, grey_levels


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
    return "b.png: cannot read it as an image"


def _break_no_alpha(root):
    _save(root / "fg" / "b.png", np.zeros((80, 80, 3), np.uint8))
    return "b.png: no alpha channel and no mask"


def _break_count(root):
    (root / "bg" / "room10.jpg").unlink()
    return r"holds 2 images \(room1.jpg, room2.jpg\), the config asks for 3 \(n_bg\)"


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


def _break_mask_size(root):
    _save(root / "mask" / "a.png", np.full((40, 40), 255, np.uint8))
    _save(root / "mask" / "b.png", np.full((80, 80), 255, np.uint8))
    return r"mask/a\.png: the mask is 40x40 but its foreground .*fg/a\.png is 80x80"


def _replace_room10(root, array) -> None:
    (root / "bg" / "room10.jpg").unlink()
    Image.fromarray(array).save(root / "bg" / "room10.tif")


def _break_float_range(root):
    _replace_room10(root, np.linspace(-0.5, 2, 160 * 160, dtype=np.float32).reshape(160, 160))
    return r"room10\.tif: a float image with values -0\.5\.\.2, outside 0\.\.1"


def _break_beyond_16_bits(root):
    _replace_room10(root, np.full((160, 160), 70000, np.int32))
    return r"room10\.tif: an integer \(I\) image with values 70000\.\.70000, outside 0\.\.65535"


@pytest.mark.parametrize(
    "breaker",
    [
        _break_unreadable, _break_no_alpha, _break_count, _break_orphan_mask, _break_empty_folder, _break_duplicate,
        _break_empty_mask, _break_mask_size, _break_float_range, _break_beyond_16_bits,
    ],
)
def test_bad_input_names_the_file_and_writes_nothing(folders, tmp_path, breaker):
    message = breaker(folders)
    mask_dir = folders / "mask" if (folders / "mask").exists() else None
    with pytest.raises(FgbgError, match=message):
        generate(ImageFolders(folders / "bg", folders / "fg", mask_dir), None, tmp_path / "out", Settings(3, 2, 2), show_progress=False)
    assert not (tmp_path / "out").exists()


def _zip_image(path: Path, member: str) -> np.ndarray:
    with zipfile.ZipFile(path) as zf:
        return np.asarray(Image.open(io.BytesIO(zf.read(member))))


def test_16_bit_and_float_images_keep_their_grey_levels(tmp_path):
    # PIL's convert("RGB") would clip both to white.
    levels = grey_levels(160, 160)
    _save(tmp_path / "bg" / "deep.png", levels.astype(np.uint16) * 257)
    _save(tmp_path / "bg" / "float.tif", levels.astype(np.float32) / 255)
    _save(tmp_path / "fg" / "a.png", _rgba(100))
    assert Image.open(tmp_path / "bg" / "deep.png").mode == "I;16"
    [written] = generate(
        ImageFolders(tmp_path / "bg", tmp_path / "fg"), None, tmp_path / "out", Settings(2, 1, 1), show_progress=False
    )
    for bg in (1, 2):  # deep.png, float.tif
        grey = _zip_image(written, source_member(BG, bg)).astype(int)
        assert np.abs(grey - levels[..., None]).max() <= JPEG_TOLERANCE


def test_a_fully_opaque_foreground_and_a_stretched_background_are_warned_about_once(tmp_path, caplog):
    _save(tmp_path / "bg" / "wide.jpg", np.zeros((100, 200, 3), np.uint8))
    _save(tmp_path / "bg" / "big.jpg", np.zeros((300, 300, 3), np.uint8))  # resized, but still square
    _save(tmp_path / "fg" / "block.png", np.full((80, 80, 4), 255, np.uint8))
    _save(tmp_path / "fg" / "cut.png", _rgba(100))
    with caplog.at_level(logging.WARNING, logger="fgbg.build.sources"):
        ImageFolders(tmp_path / "bg", tmp_path / "fg").load(2, 2)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'bg' / 'wide.jpg'}: 200x100 is resized to 160x160, away from its aspect ratio",
        f"{tmp_path / 'fg' / 'block.png'}: the mask covers the whole image (fully opaque): it is pasted as a square",
    ]


@pytest.mark.parametrize("reverse", [False, True])
def test_names_equal_in_natural_order_get_ids_by_name_whatever_the_listing_order(tmp_path, monkeypatch, reverse):
    for i, name in enumerate(("bg1.jpg", "bg01.jpg", "bg2.jpg")):
        _save(tmp_path / "bg" / name, np.full((160, 160, 3), 50 * i, np.uint8))
    _save(tmp_path / "fg" / "a.png", _rgba(100))
    listing = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listing(self), reverse=reverse)))
    scenes = ImageFolders(tmp_path / "bg", tmp_path / "fg").load(3, 1)
    assert scenes.origin["bg"] == {1: "bg01.jpg", 2: "bg1.jpg", 3: "bg2.jpg"}


def test_a_count_mismatch_lists_what_was_counted_and_what_was_skipped(folders):
    bg = folders / "bg"
    (bg / ".room11.jpg").write_bytes(b"\0\5\0\7")  # an AppleDouble file, as macOS leaves them: not an image
    Image.new("P", (16, 16)).save(bg / "room12.gif")
    _save(bg / "old" / "room13.jpg", np.zeros((160, 160, 3), np.uint8))
    with pytest.raises(SourceError) as error:
        ImageFolders(bg, folders / "fg").load(4, 2)
    assert str(error.value) == (
        f"background folder {bg} holds 3 images (room1.jpg, room2.jpg, room10.jpg; "
        "skipped: .room11.jpg, old/, room12.gif), the config asks for 4 (n_bg)"
    )
    assert ImageFolders(bg, folders / "fg").load(3, 2).origin["bg"] == {1: "room1.jpg", 2: "room2.jpg", 3: "room10.jpg"}


def test_a_long_count_mismatch_shows_the_first_names(folders):
    for i in range(12):
        (folders / "bg" / f"notes{i:02}.txt").write_text("")
    with pytest.raises(SourceError, match=r"skipped: notes00.txt, .*, notes09.txt, \.\.\. \(2 more\)\), the config"):
        ImageFolders(folders / "bg", folders / "fg").load(4, 2)


@pytest.mark.parametrize("limit, warning_as_error", [(1000, False), (20000, True)])
def test_a_decompression_bomb_is_refused_by_name(folders, monkeypatch, limit, warning_as_error):
    # 160x160 = 25,600 pixels: over twice 1,000 (PIL's error), or between 20,000 and twice that (its warning).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with warnings.catch_warnings():
        if warning_as_error:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match=r"bg/room1\.jpg: too large to open safely \(Image size \(25600 pixels\) exceeds"):
            ImageFolders(folders / "bg", folders / "fg").load(3, 2)


def test_wrong_size_setting_is_checked():
    with pytest.raises(ConfigError, match="source.wrong_size='crop': expected one of resize, reject"):
        ImageFolders("bg", "fg", wrong_size="crop")


def test_conf_source_states_the_code_defaults(tmp_path):
    folders = compose_config("generate", ["source=folders", f"source.bg_dir={tmp_path}", f"source.fg_dir={tmp_path}"])
    assert vars(instantiate(folders.source)) == vars(ImageFolders(str(tmp_path), str(tmp_path)))
    assert vars(instantiate(compose_config("generate").source)) == vars(SampleScenes())


def _generate_folders(bg_dir, fg_dir, *overrides):
    """``python generate.py source=folders ...`` in-process (depth=none, one placement); its config."""
    from fgbg.tasks.generate import generate_task

    cfg = compose_config("generate", [
        "source=folders", f"source.bg_dir={bg_dir}", f"source.fg_dir={fg_dir}", "depth=none", "placements=1",
        "progress=false", *overrides,
    ])
    generate_task(cfg)
    return cfg


def test_counts_and_output_folder_come_from_the_folders(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("FGBG_ROOT", str(tmp_path / "project"))
    cfg = _generate_folders(folders / "bg", folders / "fg")
    out = tmp_path / "project" / "data" / folders.name  # named after bg_dir's parent
    assert (cfg.n_bg, cfg.n_fg, cfg.out_dir) == (3, 2, str(out))
    settings = read_manifest(out / "batch1_images.zip")["settings"]
    assert (settings["n_bg"], settings["n_fg"]) == (3, 2)
    with pytest.raises(SourceError, match=r"holds 3 images .*, the config asks for 4 \(n_bg\)"):
        _generate_folders(folders / "bg", folders / "fg", "n_bg=4")  # a number given must still match


def test_the_sample_source_keeps_its_counts_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FGBG_ROOT", str(tmp_path))
    cfg = compose_config("generate")
    assert (cfg.n_bg, cfg.n_fg, cfg.out_dir) == (100, 100, str(tmp_path / "data" / "sample"))
    with pytest.raises(ConfigError, match="n_bg=null: the sample scenes are made, not found"):
        SampleScenes().counts(None, 5)
    from fgbg.tasks.generate import generate_task

    with pytest.raises(ConfigError, match="out_dir=null: only source=folders names its own output folder"):
        generate_task(compose_config("generate", ["out_dir=null"]))


@pytest.mark.parametrize(
    "parent, name",
    [("kitchen", "kitchen"), ("my photos,a=b'c", "my_photos_a_b_c"), ("sample", "folders_sample"),
     ("sample_small", "folders_sample_small")],
)
def test_the_output_folder_is_never_a_sample_dataset_s_and_needs_no_quoting(tmp_path, parent, name):
    assert ImageFolders(tmp_path / parent / "bg", tmp_path / "fg").dataset_name == name
    assert ImageFolders("/bg", "/fg").dataset_name == "folders"


def test_a_path_with_hydra_s_special_characters_works_quoted(folders, tmp_path, monkeypatch):
    # What the README tells a shell user to type: 'source.bg_dir="/my photos/a,b"'.
    odd = tmp_path / "my photos" / "a,b=c'd"
    odd.mkdir(parents=True)
    (folders / "bg").rename(odd / "bg")
    out = tmp_path / "out, too"
    cfg = _generate_folders(f'"{odd / "bg"}"', f'"{folders / "fg"}"', f'out_dir="{out}"')
    assert cfg.source.bg_dir == str(odd / "bg") and (out / "batch1_images.zip").exists()
    with pytest.raises(HydraException, match="mismatched input '='"):  # unquoted, = (and , ') are Hydra's syntax
        compose_config("generate", ["source=folders", f"source.bg_dir={odd / 'bg'}"])
