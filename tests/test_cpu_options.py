"""The training step's speed options (issue 17, bench/cpu_options.py): bf16 autocast keeps the loss and the
metrics in float32, trains as float32 does within bf16's rounding, and is the default only where the hardware
computes bfloat16 natively; channels_last and torch.compile train as the plain step does, within float32 rounding."""

import copy
from functools import partial

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from fgbg import hardware
from fgbg.errors import ConfigError
from fgbg.models.base import MaskDepthNet
from fgbg.run_dirs import CONFIG_FILE
from fgbg.tasks.train import _record_config, speed_options
from fgbg.training.losses import MaskDepthLoss
from fgbg.training.module import MaskDepthModule, build_module
from tests.helpers.configs import compose_config, module_config, train_config
from tests.helpers.data import fake_batch, fake_loader
from tests.helpers.paths import CONF_DIR


def _matting_loss() -> MaskDepthLoss:
    """Every kind of term: BCE, Dice, boundary BCE on the mask; L1, SSIM (kornia), gradient on the depth."""
    return instantiate(OmegaConf.load(CONF_DIR / "loss" / "matting.yaml"))


def _trainer(tmp_path, precision: str, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kwargs,
    )


def test_the_loss_of_bf16_predictions_is_computed_in_float32():
    batch = fake_batch(2, 16)
    g = torch.Generator().manual_seed(0)
    logits, depth = torch.randn(2, 1, 16, 16, generator=g) * 3, torch.rand(2, 1, 16, 16, generator=g)
    loss = _matting_loss()
    expected = loss(logits.bfloat16().float(), depth.bfloat16().float(), batch["mask"], batch["depth"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(logits.bfloat16(), depth.bfloat16(), batch["mask"], batch["depth"])
    assert all(value.dtype == torch.float32 for value in got.values())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


class Elementwise(MaskDepthNet):
    """Outputs made by elementwise ops alone, which autocast leaves in float32: the same under every precision,
    so any difference in loss or metrics would be theirs."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, background: torch.Tensor, composite: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        difference = (composite - background).abs().mean(1, keepdim=True)
        return self.scale * (difference - 0.1), composite[:, :1] * self.scale / 8


def test_loss_and_held_out_metrics_are_the_same_under_bf16_autocast(tmp_path):
    # Without the float32 guard, torchmetrics' SSIM (a convolution, which autocast runs in bfloat16) moves by 0.016.
    module = MaskDepthModule(Elementwise(), _matting_loss(), partial(torch.optim.SGD, lr=0.1))
    scores = {}
    for precision in ("32-true", "bf16-mixed"):
        trainer = _trainer(tmp_path, precision)
        (scores[precision],) = trainer.validate(copy.deepcopy(module), fake_loader(4, 16), verbose=False)
    assert "val/depth_ssim" in scores["32-true"] and "val/mask_iou" in scores["32-true"]
    assert scores["bf16-mixed"] == pytest.approx(scores["32-true"], rel=1e-6, abs=1e-7)


class StepLosses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def test_bf16_mixed_trains_as_float32_does_within_bf16_rounding(tmp_path):
    """Same weights, same batches: each step's loss within 1%. bfloat16 keeps 8 significant bits (a relative
    rounding of 2**-9 per op in the convolutions); here the losses move by under 0.1%, the margin is for other
    CPUs' oneDNN kernels."""
    torch.manual_seed(0)
    module = build_module(module_config("convgen", optimizer="adam"))
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        recorder = StepLosses()
        trainer = _trainer(tmp_path, precision, max_steps=4, limit_val_batches=0, callbacks=[recorder])
        trainer.fit(copy.deepcopy(module), fake_loader(8, 16))
        losses[precision] = recorder.losses
    assert len(losses["32-true"]) == 4
    assert losses["bf16-mixed"] == pytest.approx(losses["32-true"], rel=1e-2)
    assert losses["bf16-mixed"][-1] < losses["bf16-mixed"][0]


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_the_default_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(hardware, "cuda_has_bf16", lambda: False)  # a GPU without: float32 there too
    for overrides in (["trainer=cpu"], ["trainer.accelerator=cpu"]):
        assert compose_config("train", overrides).trainer.precision == expected
    assert compose_config("train", ["trainer=gpu"]).trainer.precision == "32-true"
    assert compose_config("train", ["trainer=cpu", "trainer.precision=32-true"]).trainer.precision == "32-true"
    assert compose_config("eval", ["ckpt_path=x", "trainer=cpu"]).trainer.precision == expected


def test_oneDNN_emulation_alone_does_not_make_bf16_the_default(monkeypatch):
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert hardware.default_precision("cpu") == "32-true"


@pytest.mark.parametrize("native", [True, False])
def test_the_run_records_the_precision_this_machine_resolved(monkeypatch, tmp_path, native):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: native)
    cfg = train_config(tmp_path / "data", tmp_path)
    _record_config(cfg)
    recorded = (tmp_path / CONFIG_FILE).read_text()
    assert f"precision: {'bf16-mixed' if native else '32-true'}\n" in recorded and "fgbg.precision" not in recorded


def _options_cfg(**options):
    return OmegaConf.create(options)


@pytest.mark.parametrize(("model", "setting", "expected"), [
    ("convgen", "auto", True), ("net", "auto", True), ("unet", "auto", False),  # the U-Net's GroupNorm is slow in NHWC
    ("unet", True, True), ("convgen", False, False),
])
def test_channels_last_converts_the_weights_as_set(tmp_path, model, setting, expected):
    module = build_module(module_config(model))
    speed_options(_options_cfg(channels_last=setting, compile=False), _trainer(tmp_path, "32-true"), module)
    # A 1x1 or one-channel kernel is laid out alike in both formats: the others tell them apart.
    convs = [m.weight for m in module.modules() if isinstance(m, nn.Conv2d) and min(m.weight.shape[1:]) > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) == expected for w in convs)


def test_channels_last_auto_is_off_on_a_gpu_and_a_typo_is_refused():
    net = build_module(module_config("convgen")).net
    assert not hardware.use_channels_last("auto", net, "cuda")
    with pytest.raises(ConfigError, match="channels_last='yes'"):
        hardware.use_channels_last("yes", net, "cpu")


def _fit_losses(tmp_path, module, precision: str = "32-true", steps: int = 3) -> list[float]:
    recorder = StepLosses()
    trainer = _trainer(tmp_path, precision, max_steps=steps, limit_val_batches=0, callbacks=[recorder])
    trainer.fit(module, fake_loader(8, 16))
    return recorder.losses


def test_channels_last_trains_as_contiguous_memory_does(tmp_path):
    """Same weights, same batches: the same losses but for float32 rounding (oneDNN sums in another order in
    NHWC), which Adam's steps amplify a little."""
    torch.manual_seed(0)
    module = build_module(module_config("convgen", optimizer="adam"))
    contiguous = _fit_losses(tmp_path, copy.deepcopy(module))
    nhwc = copy.deepcopy(module).to(memory_format=torch.channels_last)
    assert _fit_losses(tmp_path, nhwc) == pytest.approx(contiguous, rel=1e-4)


@pytest.mark.slow
def test_compile_trains_as_eager_does(tmp_path):
    """Inductor's fused kernels (and channels_last) round float32 otherwise than eager's: the same losses
    within 1e-4."""
    torch.manual_seed(0)
    module = build_module(module_config("convgen", optimizer="adam"))
    eager = _fit_losses(tmp_path, copy.deepcopy(module))
    compiled = copy.deepcopy(module)
    speed_options(_options_cfg(channels_last=True, compile=True), _trainer(tmp_path, "32-true"), compiled)
    assert compiled.net._compiled_call_impl is not None  # nn.Module.compile's
    assert _fit_losses(tmp_path, compiled) == pytest.approx(eager, rel=1e-4)
    assert compiled.state_dict().keys() == module.state_dict().keys()  # checkpoints as without it
