import math
import traceback

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from fgbg.losses import MaskDepthLoss
from fgbg.models.convgen import ConvGen
from fgbg.module import CheckpointError, MaskDepthModule, build_module, load_module
from tests.paths import CONF_DIR

TERMS = ("loss", "loss_mask", "loss_depth", "mask/bce", "depth/ssim")


def _config(model: str = "convgen", optimizer: str = "adam", scheduler: str = "step") -> DictConfig:
    """The module's groups as train.py composes them (without the rest of conf/train.yaml)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(overrides=[f"+model={model}", "+loss=seed", f"+optimizer={optimizer}", f"+scheduler={scheduler}"])


def _batch(batch: int = 2, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch as the data side makes it: a square foreground, brighter and nearer than its background."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.rand(batch, 1, size, size, generator=g).expand(batch, 3, size, size) * 0.5
    mask = torch.zeros(batch, 1, size, size)
    depth = torch.linspace(0, 0.5, size).view(1, 1, size, 1).repeat(batch, 1, 1, size)
    half = size // 2
    for i in range(batch):
        x, y = torch.randint(0, half, (2,), generator=g).tolist()
        mask[i, :, y : y + half, x : x + half] = 1
        depth[i, :, y : y + half, x : x + half] = 0.9
    fg_bg = torch.where(mask.bool(), torch.full_like(bg, 0.8), bg)
    return {"bg_image": bg.contiguous(), "fg_bg_image": fg_bg, "ms_bg_image": mask, "dp_image": depth}


def _loader(n: int = 4, size: int = 16) -> DataLoader:
    batch = _batch(n, size)
    samples = [{key: value[i] for key, value in batch.items()} for i in range(n)]
    return DataLoader(samples, batch_size=2)


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
    module = build_module(_config())
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer attached: logging is skipped
        loss = module.training_step(_batch(), 0)
    assert loss.shape == () and math.isfinite(loss.item()) and loss.requires_grad


def test_steps_log_every_term_and_predict_gives_probabilities(tmp_path):
    module = build_module(_config())
    trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=1)
    trainer.fit(module, _loader(), _loader())
    logged = set(trainer.callback_metrics)
    assert {f"train/{t}_step" for t in TERMS} | {f"train/{t}_epoch" for t in TERMS} <= logged
    assert {f"val/{t}" for t in TERMS} <= logged

    trainer.test(module, _loader())
    assert {f"test/{t}" for t in TERMS} <= set(trainer.callback_metrics)

    (prediction, _) = trainer.predict(module, _loader())
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
    module = build_module(_config(optimizer=name, scheduler="step"))
    conf = module.configure_optimizers()
    optimizer, schedule = conf["optimizer"], conf["lr_scheduler"]
    assert type(optimizer) is cls and {k: optimizer.defaults[k] for k in settings} == settings
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(module.parameters()))
    assert schedule["interval"] == "epoch"
    scheduler = schedule["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.optimizer is optimizer
    assert (scheduler.step_size, scheduler.gamma) == (10, 0.1)


def test_scheduler_none_means_no_scheduler():
    cfg = _config(scheduler="none")
    module = build_module(cfg)
    assert module.make_scheduler is None and module.hparams.config["scheduler"] is None
    assert set(module.configure_optimizers()) == {"optimizer"}


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_checkpoint_reloads_to_identical_outputs_and_resumes(tmp_path):
    cfg = _config()
    module = build_module(cfg)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(module, _loader())  # moves the weights and BatchNorm's running statistics off their start
    path = tmp_path / "module.ckpt"
    trainer.save_checkpoint(path)

    loaded = load_module(path)
    assert type(loaded.net) is ConvGen and loaded.hparams == module.hparams
    batch = _batch(seed=1)
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
    resumed.fit(build_module(cfg), _loader(), ckpt_path=path)
    assert resumed.global_step == 3


def test_overfits_one_batch():
    torch.manual_seed(0)
    module = build_module(_config(optimizer="adam", scheduler="none"))  # Adam, lr 1e-3
    optimizer = module.configure_optimizers()["optimizer"]
    batch = _batch(batch=4, size=32)
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
    module = build_module(_config())
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
