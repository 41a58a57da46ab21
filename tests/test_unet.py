import inspect

import huggingface_hub.constants
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fgbg.models.unet import PretrainedWeightsError, UNet
from fgbg.tasks.train import train
from fgbg.training.module import upgraded_config
from fgbg.upgrade import UNET_FIRST_LAYOUT
from tests.helpers.configs import train_config
from tests.helpers.paths import CONF_DIR


def configured(**overrides) -> UNet:
    """The U-Net as ``model=unet`` builds it (conf/model/unet.yaml)."""
    return instantiate(OmegaConf.load(CONF_DIR / "model" / "unet.yaml"), **overrides)


def _inputs(size: int, channels: int = 3, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A background and a composite, ``(batch, channels, size, size)`` each."""
    g = torch.Generator().manual_seed(0)
    return tuple(torch.rand(batch, channels, size, size, generator=g) for _ in range(2))


@pytest.fixture(scope="module")
def unet() -> UNet:
    return configured().eval()


@pytest.mark.parametrize("size", [64, 96, 160])
def test_outputs_are_one_channel_at_input_size(unet, size):
    with torch.no_grad():
        mask_logits, depth = unet(*_inputs(size))
    assert mask_logits.shape == depth.shape == (2, 1, size, size)


def test_rejects_a_size_that_is_not_a_multiple_of_32(unet):
    with pytest.raises(ValueError, match=r"input size 50x50 is not a multiple of 32.*data.image_size=64"):
        unet(*_inputs(50))


def test_parameter_count(unet):
    # resnet18 encoder (9 input channels) 11.2M + decoder (128, 64, 32, 16, 16) 1.3M + refinement + head.
    assert sum(p.numel() for p in unet.parameters()) == 12_485_394


def test_class_defaults_are_conf_model_unet_yaml():
    config = OmegaConf.load(CONF_DIR / "model" / "unet.yaml")
    defaults = inspect.signature(UNet).parameters
    assert {key: defaults[key].default for key in config if key != "_target_"} == {
        key: tuple(value) if key == "decoder_channels" else value for key, value in config.items() if key != "_target_"
    }


def test_older_checkpoints_get_the_first_layout_filled_in():
    # Checkpoints made before difference/refine/norms existed hold none of those keys: they rebuild this.
    model_config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "unet.yaml")) | {"encoder_name": "resnet18"}
    for key in UNET_FIRST_LAYOUT:
        del model_config[key]
    config = upgraded_config({"model": model_config, "loss": {}, "optimizer": {}, "scheduler": None})
    model = instantiate(config["model"])
    assert sum(p.numel() for p in model.parameters()) == 12_470_562
    assert model.net.encoder.conv1.in_channels == 6


def test_difference_is_a_third_input():
    model = configured()
    assert model.net.encoder.model.conv1.in_channels == 9
    seen = {}
    model.net.encoder.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0]))
    background, composite = _inputs(32)
    model(background, composite)
    assert torch.equal(seen["x"][:, 6:], composite - background)


def test_prediction_does_not_depend_on_the_batch():
    # No BatchNorm: training mode computes what evaluation does, and one sample alone what it does in a batch.
    model, inputs = configured().train(), _inputs(32)
    with torch.no_grad():
        together = model(*inputs)[0][:1]
        alone = model(*(value[:1] for value in inputs))[0]
        evaluated = model.eval()(*inputs)[0][:1]
    torch.testing.assert_close(alone, together)
    torch.testing.assert_close(evaluated, together)


def test_encoder_norm_needs_a_timm_encoder_that_takes_it():
    with pytest.raises(ValueError, match="encoder_norm='groupnorm' needs a timm encoder"):
        UNet(encoder_name="resnet18", encoder_norm="groupnorm")
    with pytest.raises(ValueError, match="'tu-mobilenetv4_conv_small' does not take encoder_norm='groupnorm'.*encoder_norm=null"):
        UNet(encoder_name="tu-mobilenetv4_conv_small", encoder_norm="groupnorm")


def test_channel_arguments_and_mask_first():
    model, seen = configured(in_channels=1, mask_channels=2, depth_channels=3), {}
    model.net.segmentation_head.register_forward_hook(lambda _m, _in, out: seen.__setitem__("head", out))
    mask_logits, depth = model(*_inputs(32, channels=1))
    assert mask_logits.shape == (2, 2, 32, 32) and depth.shape == (2, 3, 32, 32)
    assert torch.equal(mask_logits, seen["head"][:, :2]) and torch.equal(depth, seen["head"][:, 2:])


def test_missing_pretrained_weights_fail_fast_with_how_to_get_them(monkeypatch, tmp_path):
    # An empty cache and offline mode (HF_HUB_OFFLINE=1, read at import): no network, no retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match=r"encoder 'resnet18' \(encoder_weights='imagenet'\)") as error:
        UNet(encoder_name="resnet18", encoder_weights="imagenet", encoder_norm=None)
    assert "smp.Unet('resnet18', encoder_weights='imagenet')" in str(error.value)
    assert "model.encoder_weights=null" in str(error.value)


def test_fast_dev_run(small_dataset, tmp_path):
    cfg = train_config(small_dataset, tmp_path, "model=unet", "trainer.fast_dev_run=true", "data.image_size=32")
    metrics = train(cfg)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key]))
