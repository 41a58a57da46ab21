import math
import traceback

import lightning as L
import pytest
import torch

from fgbg.models.convgen import ConvGen
from fgbg.training.losses import MaskDepthLoss
from fgbg.training.module import CheckpointError, MaskDepthModule, build_module, load_module
from tests.helpers.configs import module_config
from tests.helpers.data import fake_batch, fake_loader

TERMS = ("loss", "loss_mask", "loss_depth", "mask/bce", "depth/ssim")


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
    assert set(prediction) == {"mask", "depth"}
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
    batch = fake_batch(seed=1)
    with torch.no_grad():
        for expected, got in zip(module.eval()(batch), loaded.eval()(batch)):
            assert torch.equal(expected, got)

    # Lightning's own loader, given the objects the hyperparameters describe.
    via_lightning = MaskDepthModule.load_from_checkpoint(
        path, net=ConvGen(), loss=MaskDepthLoss({"bce": 2.0}, {"ssim": 1.0}), optimizer=torch.optim.Adam
    )
    with torch.no_grad():
        assert torch.equal(via_lightning.eval()(batch)[1], module(batch)[1])

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
        losses = module.loss(*module(batch), batch["ms_bg_image"], batch["dp_image"])
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
