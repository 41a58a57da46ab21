import math
import traceback
from pathlib import Path

import lightning as L
import pytest
import torch

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.transforms import Preprocessing
from fgbg.models.convgen import ConvGen
from fgbg.training.losses import MaskDepthLoss
from fgbg.training.module import CheckpointError, MaskDepthModule, build_module, load_module
from fgbg.upgrade import UNET_FIRST_LAYOUT
from tests.helpers.configs import module_config
from tests.helpers.data import fake_batch, fake_loader
from tests.helpers.run_if import RunIf

TERMS = ("loss", "loss_mask", "loss_depth", "mask/bce", "depth/ssim")
DATA = Path(__file__).parent / "data"


def _inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return batch[BACKGROUND], batch[COMPOSITE]


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_training_step_returns_a_finite_scalar():
    module = build_module(module_config())
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer attached: logging is skipped
        loss = module.training_step(fake_batch(), 0)
    assert loss.shape == () and math.isfinite(loss.item()) and loss.requires_grad


def test_steps_log_every_term_and_predict_gives_probabilities(tmp_path):
    module = build_module(module_config())
    trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=1)
    trainer.fit(module, fake_loader(), fake_loader())
    logged = set(trainer.callback_metrics)
    assert {f"train/{t}_step" for t in TERMS} | {f"train/{t}_epoch" for t in TERMS} <= logged
    assert {f"val/{t}" for t in TERMS} <= logged

    trainer.test(module, fake_loader())
    assert {f"test/{t}" for t in TERMS} <= set(trainer.callback_metrics)

    (prediction, _) = trainer.predict(module, fake_loader())
    assert set(prediction) == {MASK, DEPTH} == {"mask", "depth"}
    for value in prediction.values():
        assert value.shape == (2, 1, 16, 16) and 0 <= value.min() and value.max() <= 1


@pytest.mark.parametrize(
    "name, cls, settings",
    [
        ("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}),
        ("adam", torch.optim.Adam, {"lr": 1e-3}),
        ("adamw", torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-4}),
    ],
)
def test_optimizer_with_step_schedule(name, cls, settings):
    module = build_module(module_config(optimizer=name, scheduler="step"))
    conf = module.configure_optimizers()
    optimizer, schedule = conf["optimizer"], conf["lr_scheduler"]
    assert type(optimizer) is cls and {k: optimizer.defaults[k] for k in settings} == settings
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(module.parameters()))
    assert schedule["interval"] == "epoch"
    scheduler = schedule["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.optimizer is optimizer
    assert (scheduler.step_size, scheduler.gamma) == (10, 0.1)


def test_scheduler_none_means_no_scheduler():
    cfg = module_config(scheduler="none")
    module = build_module(cfg)
    assert module.make_scheduler is None and module.hparams.config["scheduler"] is None
    assert set(module.configure_optimizers()) == {"optimizer"}


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_checkpoint_reloads_to_identical_outputs_and_resumes(tmp_path):
    cfg = module_config()
    module = build_module(cfg)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(module, fake_loader())  # moves the weights and BatchNorm's running statistics off their start
    path = tmp_path / "module.ckpt"
    trainer.save_checkpoint(path)

    loaded = load_module(path)
    assert type(loaded.net) is ConvGen and loaded.hparams == module.hparams
    inputs = _inputs(fake_batch(seed=1))
    with torch.no_grad():
        for expected, got in zip(module.eval()(*inputs), loaded.eval()(*inputs)):
            assert torch.equal(expected, got)

    # Lightning's own loader, given the objects the hyperparameters describe.
    via_lightning = MaskDepthModule.load_from_checkpoint(
        path, net=ConvGen(), loss=MaskDepthLoss({"bce": 2.0}, {"ssim": 1.0}), optimizer=torch.optim.Adam
    )
    with torch.no_grad():
        assert torch.equal(via_lightning.eval()(*inputs)[1], module(*inputs)[1])

    # Resuming a fit loads the whole checkpoint with torch.load's default weights_only=True.
    resumed = _trainer(tmp_path, max_steps=3)
    resumed.fit(build_module(cfg), fake_loader(), ckpt_path=path)
    assert resumed.global_step == 3


def test_overfits_one_batch():
    torch.manual_seed(0)
    module = build_module(module_config(optimizer="adam", scheduler="none"))  # Adam, lr 1e-3
    optimizer = module.configure_optimizers()["optimizer"]
    batch = fake_batch(batch=4, size=32)
    history = []
    for _ in range(20):
        losses = module.loss(*module(*_inputs(batch)), batch[MASK], batch[DEPTH])
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append((losses["loss_mask"].item(), losses["loss_depth"].item()))
    (mask_start, depth_start), (mask_end, depth_end) = history[0], history[-1]
    assert mask_end < 0.5 * mask_start and depth_end < 0.5 * depth_start, history


def _no_weights(path):
    module = build_module(module_config())
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": {}}, path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda path: path.write_bytes(b""), "not a checkpoint of train.py (the file is empty or cut short)"),
        (lambda path: path.write_bytes(bytes(range(256)) * 4), "not a checkpoint of train.py (torch.load(weights_only"),
        (lambda path: path.write_text("not a checkpoint"), "not a checkpoint of train.py (torch.load(weights_only"),
        (lambda path: torch.save({"weight": torch.zeros(2)}, path), "not a checkpoint of train.py (it holds no hyper"),
        (lambda path: None, "no such checkpoint (train.py writes <run>/checkpoints/last.ckpt)"),
        (_no_weights, "its weights do not fit the model its config describes"),
    ],
    ids=["empty", "random", "text", "foreign", "missing", "no_weights"],
)
def test_load_module_names_a_file_that_is_not_a_checkpoint(tmp_path, make, message):
    path = tmp_path / "model.ckpt"
    make(path)
    with pytest.raises(CheckpointError) as error:
        load_module(path)
    assert str(error.value).startswith(f"{path}: {message}")
    # Not even a full traceback repeats torch's advice to load with weights_only=False (it runs the file's code).
    assert "False" not in "".join(traceback.format_exception(error.value))


@pytest.mark.parametrize("model", ["convgen", "unet"])
def test_a_checkpoint_of_c826fc5_loads_with_its_weights_and_outputs(model):
    # Written by main at c826fc5 (train.py, data.image_size=32, 3 steps; optimizer state stripped): its loss
    # under its old _target_ fgbg.losses.MaskDepthLoss, its preprocessing as `data` settings, the model
    # called on the batch dict. The outputs were the old code's on the recorded inputs.
    path = DATA / f"c826fc5_{model}.ckpt"
    saved = torch.load(path, weights_only=True)
    module = load_module(path).eval()
    assert module.state_dict().keys() == saved["state_dict"].keys()
    assert all(torch.equal(value, saved["state_dict"][key]) for key, value in module.state_dict().items())
    assert module.preprocessing == Preprocessing(image_size=32, grayscale=True, stats=None)
    assert type(module.loss) is MaskDepthLoss
    recorded = torch.load(DATA / "c826fc5_outputs.pt", weights_only=True)[model]
    with torch.no_grad():
        mask_logits, depth = module(recorded["background"], recorded["composite"])
    assert torch.equal(mask_logits, recorded["mask_logits"]) and torch.equal(depth, recorded["depth"])


def test_a_unet_checkpoint_from_before_its_layout_options_loads_with_the_first_layout(tmp_path):
    checkpoint = torch.load(DATA / "c826fc5_unet.ckpt", weights_only=True)
    model = checkpoint["hyper_parameters"]["config"]["model"]
    recorded = {key: model.pop(key) for key in UNET_FIRST_LAYOUT if key in model}
    assert recorded == {key: UNET_FIRST_LAYOUT[key] for key in recorded}  # what it was trained with
    assert "depth_output" not in recorded  # made before the option: its sigmoid is filled in
    torch.save(checkpoint, tmp_path / "older.ckpt")
    loaded = load_module(tmp_path / "older.ckpt")
    assert loaded.hparams.config["model"] == {**model, **UNET_FIRST_LAYOUT}
    assert all(torch.equal(value, checkpoint["state_dict"][key]) for key, value in loaded.state_dict().items())


@RunIf(cuda=True)
def test_steps_in_bf16_on_cuda(tmp_path):
    module = build_module(module_config())
    trainer = L.Trainer(
        accelerator="cuda", devices=1, precision="bf16-mixed", max_steps=2, limit_val_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(module, fake_loader(), fake_loader())
    assert trainer.global_step == 2
    assert all(math.isfinite(trainer.callback_metrics[f"val/{t}"].item()) for t in TERMS)
    (prediction, _) = trainer.predict(module, fake_loader())
    for value in prediction.values():
        assert value.shape == (2, 1, 16, 16) and 0 <= value.float().min() and value.float().max() <= 1
