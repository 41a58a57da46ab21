import json
import random
import time
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import wandb
from lightning.pytorch.loggers import WandbLogger
from PIL import Image
from torch.utils.data import DataLoader

from fgbg.data.batch import DEPTH, MASK
from fgbg.training.callbacks import FlatDepthWarning, PredictionGrid, RngState, SplitFile, Timings, prediction_grid
from fgbg.training.callbacks.grids import GRID_COLUMNS, HEADER, MIN_TILE, PADDING
from fgbg.training.metrics import MaskDepthMetrics
from fgbg.training.module import MONITORED, build_module
from tests.helpers.configs import compose_config, module_config
from tests.helpers.data import fake_batch, fake_loader


def _tile(image: np.ndarray, row: int, column: int, side: int) -> np.ndarray:
    step = side + PADDING
    top, left = HEADER + PADDING + row * step, PADDING + column * step
    return image[top : top + side, left : left + side]


def test_grid_rows_are_samples_and_columns_composite_masks_depths():
    batch = fake_batch(batch=3, size=16)
    prediction = {MASK: torch.rand(3, 1, 16, 16), DEPTH: torch.rand(3, 1, 16, 16)}
    image = np.asarray(prediction_grid(batch, prediction))
    side = MIN_TILE  # 16 px enlarged 4x
    assert image.shape == (HEADER + 3 * (side + PADDING) + PADDING, 5 * (side + PADDING) + PADDING, 3)
    columns = [None, batch[MASK], prediction[MASK], batch[DEPTH], prediction[DEPTH]]
    for row in range(3):
        for column, values in enumerate(columns):
            tile = _tile(image, row, column, side)
            if values is None:  # the composite, stretched to its own [min, max]
                assert tile.min() == 0 and tile.max() == 255
                continue
            expected = (values[row, 0] * 255).round().repeat_interleave(4, 0).repeat_interleave(4, 1)
            assert np.array_equal(tile[..., 0], expected.byte().numpy()), (row, GRID_COLUMNS[column])


def test_prediction_grid_callback_writes_one_png_per_epoch_and_logs_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=tmp_path, project="fgbg-test")
    callback = PredictionGrid(tmp_path / "grids", n_samples=3)
    trainer = L.Trainer(accelerator="cpu", logger=logger, callbacks=[callback], max_epochs=2, limit_train_batches=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, log_every_n_steps=1)
    trainer.fit(build_module(module_config()), fake_loader(), fake_loader(6))
    wandb.finish()
    pngs = sorted(p.name for p in (tmp_path / "grids").iterdir())
    assert pngs == ["epoch_000.png", "epoch_001.png"]
    with Image.open(tmp_path / "grids" / "epoch_001.png") as image:
        assert image.size == (5 * (MIN_TILE + PADDING) + PADDING, HEADER + 3 * (MIN_TILE + PADDING) + PADDING)
    # Samples spread evenly over the validation set: the first, the middle and the last of 6.
    expected_masks = fake_batch(6, 16)[MASK][[0, 2, 5]]
    assert torch.equal(callback._batch[MASK], expected_masks)
    logged = list(tmp_path.glob("wandb/offline-run-*/files/media/images/val/predictions_*.png"))
    assert len(logged) == 2


class _SlowData(torch.utils.data.Dataset):
    """Samples that take ``delay`` seconds each to load."""

    def __init__(self, n: int, delay: float):
        self.samples, self.delay = [{k: v[i] for k, v in fake_batch(n, 16).items()} for i in range(n)], delay

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        time.sleep(self.delay)
        return self.samples[index]


class _Tiny(L.LightningModule):
    """A one-parameter model: its steps take well under the loader's delay, even on a busy machine."""

    def __init__(self):
        super().__init__()
        self.level = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return (batch[DEPTH] - self.level).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("delay", [0.0, 0.1])
def test_timings_log_throughput_and_data_wait(tmp_path, delay):
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[Timings()], max_epochs=2,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(_Tiny(), DataLoader(_SlowData(6, delay), batch_size=2))
    samples_per_s = trainer.callback_metrics["perf/samples_per_s"].item()
    wait = trainer.callback_metrics["perf/data_wait_fraction"].item()
    assert 0 <= wait <= 1 and samples_per_s > 0
    if delay:  # 0.2 s of loading per batch of 2
        assert wait > 0.5 and samples_per_s < 2 / 0.2


def _draws() -> tuple:
    return torch.rand(3), np.random.rand(3), random.random()


def test_rng_state_resumes_the_random_streams_from_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save(RngState().state_dict(), tmp_path / "state.pt")
    expected = _draws()
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    restored = RngState()
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    restored.on_train_start(None, None)
    torch_draw, numpy_draw, python_draw = _draws()
    assert torch.equal(torch_draw, expected[0]) and np.array_equal(numpy_draw, expected[1]) and python_draw == expected[2]
    restored.on_train_start(None, None)  # restored once: the next start of training draws on
    assert not torch.equal(torch.rand(3), expected[0])


@pytest.mark.parametrize("spread, warned", [(1e-5, True), (0.05, False), (None, False)])
def test_a_flat_depth_prediction_is_warned_about(spread, warned, caplog):
    metrics = {} if spread is None else {"val/depth_spread": torch.tensor(spread)}  # None: mask-only data
    trainer = SimpleNamespace(callback_metrics=metrics, sanity_checking=False, current_epoch=3)
    FlatDepthWarning(monitor="val/depth_spread", min_spread=1e-3).on_validation_end(trainer, None)
    assert ("epoch 3: val/depth_spread = 1e-05 < 0.001, the depth prediction is flat" in caplog.text) == warned


def test_the_flat_depth_warning_watches_a_logged_metric():
    assert compose_config("train").callbacks.flat_depth.monitor in MaskDepthMetrics("val/").depth.keys()


def test_checkpoints_rank_by_what_the_module_logs():
    assert compose_config("train").callbacks.model_checkpoint.monitor == MONITORED == "val/loss"


@pytest.mark.parametrize("global_zero", [True, False])
def test_split_file_writes_the_datamodule_split_on_setup(tmp_path, global_zero):
    split = {"strategy": "4k", "data_dir": "data", "train_bg": [1, 2], "counts": {"train": 4}}
    datamodule = SimpleNamespace(split_description=split)
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=global_zero, default_root_dir=tmp_path / "run")
    SplitFile().setup(trainer, None, "fit")
    path = tmp_path / "run" / "split.json"
    if global_zero:
        assert path.read_text() == json.dumps(split, indent=1)
    else:
        assert not path.exists()
