"""experiment=matting, the recipe that beats background subtraction: its depth learns, and its mask beats
subtraction's on a plate that is not pixel-identical to the composite's background."""

import csv
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from fgbg.format.names import BG, FG_BG, MASK_BLACK, SampleId, composite_member, source_member
from fgbg.tasks.predict import predict
from fgbg.tasks.train import train
from tests.helpers.configs import train_config

# A few dozen steps of the recipe on the small sample data, at a test's size.
RECIPE = [
    "experiment=matting", "data.strategy=40k", "data.image_size=32", "trainer.max_time=null", "trainer.max_epochs=2",
    "trainer.limit_train_batches=15", "trainer.limit_val_batches=4", "trainer.log_every_n_steps=1", "test=false",
]


@pytest.fixture(scope="module")
def runs(small_dataset, tmp_path_factory):
    """The recipe trained for 30 steps, and the subtraction baseline calibrated on the same data: run folders."""
    root = tmp_path_factory.mktemp("recipe")
    for model in ("unet", "subtraction"):
        train(train_config(small_dataset, root / model, *RECIPE, f"model={model}"))
    return root


def _logged(run, name: str) -> list[float]:
    rows = csv.DictReader(open(run / "csv" / "metrics.csv"))
    return [float(row[name]) for row in rows if row.get(name)]


def test_the_recipes_depth_learns_and_does_not_go_flat(runs, one_torch_thread):
    depth_loss = _logged(runs / "unet", "train/loss_depth_step")
    assert len(depth_loss) == 30
    assert np.mean(depth_loss[-8:]) < 0.8 * np.mean(depth_loss[:8])  # it has fallen
    assert min(_logged(runs / "unet", "val/depth_spread")) > 0.02  # the prediction is not one constant


def _member(data_dir, name: str) -> Image.Image:
    with zipfile.ZipFile(data_dir / "batch1_images.zip") as zf:
        return Image.open(io.BytesIO(zf.read(name))).convert("RGB")


def _iou(predicted: np.ndarray, target: np.ndarray) -> float:
    return (predicted & target).sum() / (predicted | target).sum()


def test_on_a_shifted_brighter_plate_the_recipe_beats_subtraction(runs, small_dataset, tmp_path):
    sample = SampleId(fg=8, bg=5, flip=0, k=1)  # a test background and foreground of the 40k split (seed 0)
    plate = np.asarray(_member(small_dataset, source_member(BG, sample.bg)), np.float32)
    # The plate as a user's photo of it might be: 2 px to the right, 5% brighter.
    moved = np.clip(np.roll(plate, 2, axis=1) * 1.05, 0, 255).astype(np.uint8)
    Image.fromarray(moved).save(tmp_path / "plate.png")
    _member(small_dataset, composite_member(FG_BG, sample)).save(tmp_path / "composite.png")
    target = np.asarray(_member(small_dataset, composite_member(MASK_BLACK, sample)).convert("L")) > 127
    iou = {}
    for model in ("unet", "subtraction"):
        ckpt = runs / model / "checkpoints" / "last.ckpt"
        predict(ckpt, tmp_path / "plate.png", tmp_path / "composite.png", tmp_path / model)
        iou[model] = _iou(np.asarray(Image.open(tmp_path / model / "composite_mask.png")) > 127, target)
    assert iou["unet"] > iou["subtraction"] + 0.1, iou
