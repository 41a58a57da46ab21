import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

import predict as predict_script
from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, INPUTS, MASK
from fgbg.data.index import sample_id as index_sample_id
from fgbg.data.transforms import Preprocessing
from fgbg.errors import FgbgError
from fgbg.format.images import ImageError
from fgbg.format.names import BG, FG_BG, SampleId, composite_member, source_member
from fgbg.tasks import predict as prediction
from fgbg.tasks.predict import GAP, PredictionError, predict
from fgbg.tasks.train import train
from tests.helpers.configs import compose_config, train_config
from tests.helpers.data import JPEG_TOLERANCE, grey_levels

# Inputs of any size are resized to the checkpoint's image size and the predictions back.
WIDTH, HEIGHT = 100, 70
ONE_STEP = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false"]


def _checkpoint(data_dir, out_dir, *overrides):
    train(train_config(data_dir, out_dir, *ONE_STEP, *overrides))
    return out_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def checkpoints(small_dataset, tmp_path_factory):
    """A one-step checkpoint of each model (32x32 grayscale inputs, as conf/data's defaults but smaller)."""
    root = tmp_path_factory.mktemp("ckpt")
    return {model: _checkpoint(small_dataset, root / model, f"model={model}") for model in ("unet", "convgen")}


def _zip_bytes(data_dir, member: str) -> bytes:
    with zipfile.ZipFile(data_dir / "batch1_images.zip") as zf:
        return zf.read(member)


def _members() -> tuple[str, list[str]]:
    return source_member(BG, 1), [composite_member(FG_BG, SampleId(1, 1, 0, k)) for k in (1, 2)]


@pytest.fixture
def images(small_dataset, tmp_path):
    """``bg.jpg``, ``a.jpg`` and ``b.png`` at WIDTH x HEIGHT, all in one folder, made from the sample data."""
    folder = tmp_path / "in"
    folder.mkdir()
    bg, composites = _members()
    for name, member in zip(("bg.jpg", "a.jpg", "b.png"), (bg, *composites)):
        image = Image.open(io.BytesIO(_zip_bytes(small_dataset, member))).resize((WIDTH, HEIGHT))
        image.save(folder / name)
    return folder


def _files(folder) -> set[str]:
    return {p.name for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("model", ["unet", "convgen"])
def test_writes_mask_depth_and_figure_per_composite(checkpoints, images, tmp_path, model):
    out = tmp_path / "out"
    written = predict(checkpoints[model], images / "bg.jpg", images, out, device="cpu")

    expected = {f"{stem}_{kind}.png" for stem in ("a", "b") for kind in ("mask", "depth", "side_by_side")}
    assert {p.name for p in written} == _files(out) == expected  # bg.jpg, in the folder, is not a composite
    for stem in ("a", "b"):
        mask, depth = (Image.open(out / f"{stem}_{kind}.png") for kind in ("mask", "depth"))
        assert mask.mode == depth.mode == "L" and mask.size == depth.size == (WIDTH, HEIGHT)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        figure = Image.open(out / f"{stem}_side_by_side.png")
        assert figure.mode == "RGB" and figure.size == (3 * WIDTH + 2 * GAP, HEIGHT)
        assert np.array_equal(np.asarray(figure)[:, WIDTH + GAP : 2 * WIDTH + GAP, 0], np.asarray(mask))


def test_predict_py_through_hydra(checkpoints, images, tmp_path):
    out = tmp_path / "out"
    overrides = [f"ckpt_path={checkpoints['unet']}", f"bg={images / 'bg.jpg'}", f"inputs={images / 'a.jpg'}", f"out={out}"]
    cfg = compose_config("predict", overrides=overrides)
    assert cfg.device == "auto"
    predict_script.main(cfg)
    assert _files(out) == {"a_mask.png", "a_depth.png", "a_side_by_side.png"}


def test_checkpoint_records_the_training_preprocessing(checkpoints):
    config = torch.load(checkpoints["unet"], weights_only=True)["hyper_parameters"]["config"]
    # One entry; no stats: data.normalize=false.
    assert config["preprocessing"] == {"image_size": 32, "grayscale": True, "stats": None}


def _training_item(cfg, sample_id: SampleId) -> dict:
    """The training data's tensors of composite ``sample_id``, from whichever split part holds it."""
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    for part in datamodule.parts.values():
        for index, sample in enumerate(part.samples):
            if index_sample_id(sample) == sample_id:
                return part[index]
    raise LookupError(sample_id)


def test_preprocesses_like_the_training_data(small_dataset, tmp_path, monkeypatch):
    overrides = ["model=convgen", "data.image_size=16", "data.grayscale=false", "data.normalize=true"]
    ckpt = _checkpoint(small_dataset, tmp_path / "run", *overrides)
    seen = {}
    load = prediction.load_module

    def load_and_watch(path):
        module = load(path)
        module.net.register_forward_pre_hook(lambda _m, args: seen.update(zip(INPUTS, args)))
        return module

    monkeypatch.setattr(prediction, "load_module", load_and_watch)
    sample_id = SampleId(1, 1, 0, 1)
    for name, member in (("bg.jpg", source_member(BG, 1)), ("a.jpg", composite_member(FG_BG, sample_id))):
        (tmp_path / name).write_bytes(_zip_bytes(small_dataset, member))
    predict(ckpt, tmp_path / "bg.jpg", tmp_path / "a.jpg", tmp_path / "out", device="cpu")

    expected = _training_item(train_config(small_dataset, tmp_path, *overrides), sample_id)
    for key in (BACKGROUND, COMPOSITE):
        assert seen[key].shape == (1, 3, 16, 16) and torch.equal(seen[key][0], expected[key])
    recorded = torch.load(ckpt, weights_only=True)["hyper_parameters"]["config"]["preprocessing"]
    assert recorded["image_size"] == 16 and recorded["grayscale"] is False and set(recorded["stats"]) >= {BG, FG_BG}


def test_inputs_alone_make_the_tensors_training_makes(small_dataset):
    # RGB at a size that resizes: 6 input planes alone against 8 with the targets.
    stats = {BG: {"mean": 0.5, "std": 0.25}, FG_BG: {"mean": 0.4, "std": 0.2}}
    preprocessing = Preprocessing(image_size=48, grayscale=False, stats=stats)
    bg, composites = _members()
    decoded = [preprocessing.image(_zip_bytes(small_dataset, member)) for member in (bg, bg, *composites)]
    pixels = {BACKGROUND: np.stack(decoded[:2]), COMPOSITE: np.stack(decoded[2:])}
    blank = np.zeros(pixels[COMPOSITE].shape[:3], np.uint8)
    trained = preprocessing.tensors(preprocessing.resized({**pixels, MASK: blank, DEPTH: blank}))
    for key, got in zip(INPUTS, preprocessing.inputs(pixels[BACKGROUND], pixels[COMPOSITE])):
        assert got.shape == (2, 3, 48, 48) and torch.equal(got, trained[key])


def _garbage(folder):
    (folder / "a.jpg").write_bytes(b"not an image")


def _other_size(folder):
    Image.new("RGB", (WIDTH + 1, HEIGHT)).save(folder / "c.png")


def _same_stem(folder):
    Image.open(folder / "a.jpg").save(folder / "a.png")


def _bad_checkpoint(folder):
    (folder / "bad.ckpt").write_text("not a checkpoint")


def _empty(folder):
    for name in ("a.jpg", "b.png"):
        (folder / name).unlink()


@pytest.mark.parametrize(
    "spoil, args, message",
    [
        (None, {"bg": "missing.jpg"}, r"missing\.jpg: no such file"),
        (None, {"ckpt_path": "missing.ckpt"}, r"missing\.ckpt: no such checkpoint"),
        (_bad_checkpoint, {"ckpt_path": "in/bad.ckpt"}, r"bad\.ckpt: not a checkpoint of train\.py"),
        (None, {"inputs": "missing"}, r"missing: no such file or folder"),
        (_garbage, {}, r"a\.jpg: cannot read it as an image"),
        (_other_size, {}, r"c\.png is 101x70 but the background .*bg\.jpg is 100x70"),
        (_same_stem, {}, r"a\.jpg and .*a\.png would write the same files"),
        (_empty, {}, r"in: no image files"),
    ],
)
def test_bad_inputs_fail_before_writing_anything(checkpoints, images, tmp_path, spoil, args, message):
    if spoil:
        spoil(images)
    paths = {"ckpt_path": checkpoints["unet"], "bg": images / "bg.jpg", "inputs": images}
    paths |= {key: tmp_path / value for key, value in args.items()}
    with pytest.raises(FgbgError, match=message):
        predict(out=tmp_path / "out", device="cpu", **paths)
    assert not (tmp_path / "out").exists()


def test_checkpoint_without_data_settings_is_refused(checkpoints, images, tmp_path):
    checkpoint = torch.load(checkpoints["unet"], weights_only=True)
    del checkpoint["hyper_parameters"]["config"]["preprocessing"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(PredictionError, match=r"old\.ckpt: records no data settings"):
        predict(tmp_path / "old.ckpt", images / "bg.jpg", images, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def save_half(image, path, format=None):
        Path(path).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", save_half)
    with pytest.raises(OSError, match="disk full"):
        prediction._write_png(Image.new("L", (2, 2)), tmp_path / "a_mask.png")
    assert _files(tmp_path) == set()


def _bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_out_equal_to_inputs_leaves_the_inputs_unchanged(checkpoints, images, caplog):
    caplog.set_level(logging.INFO, logger="fgbg.tasks.predict")
    inputs = _bytes(images)
    outputs = {f"{stem}_{kind}.png" for stem in ("a", "b") for kind in ("mask", "depth", "side_by_side")}
    for _ in range(2):  # the second run finds the first one's outputs among the composites
        predict(checkpoints["unet"], images / "bg.jpg", images, images, device="cpu")
        assert set(_bytes(images)) == set(inputs) | outputs
        assert {name: data for name, data in _bytes(images).items() if name in inputs} == inputs
    assert f"{images}: skipped 6 files named like predict's outputs" in caplog.text


def test_refuses_to_write_over_an_input(checkpoints, images):
    Image.open(images / "bg.jpg").save(images / "a_depth.png")  # a background named like a's depth output
    inputs = _bytes(images)
    with pytest.raises(PredictionError, match=r"a_depth\.png is one of predict's inputs and would be overwritten"):
        predict(checkpoints["unet"], images / "a_depth.png", images, images, device="cpu")
    assert _bytes(images) == inputs


LEVELS = grey_levels(WIDTH, HEIGHT)


@pytest.mark.parametrize(
    "name, array", [("deep.png", LEVELS.astype(np.uint16) * 257), ("float.tif", LEVELS.astype(np.float32) / 255)]
)
def test_read_keeps_the_grey_levels_of_16_bit_and_float_images(tmp_path, name, array):
    Image.fromarray(array).save(tmp_path / name)
    image, pixels = prediction._read(tmp_path / name, Preprocessing(image_size=HEIGHT, grayscale=True, stats=None))
    assert image.mode == "L" and np.array_equal(np.asarray(image), LEVELS)  # side_by_side's composite panel
    assert pixels.shape == (HEIGHT, WIDTH) and np.abs(pixels.astype(int) - LEVELS).max() <= JPEG_TOLERANCE


def test_read_names_a_decompression_bomb(images, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match=r"a\.jpg: too large to open safely \(Image size \(7000 pixels\) exceeds limit of 200"):
        prediction._read(images / "a.jpg", Preprocessing(image_size=64, grayscale=True, stats=None))
