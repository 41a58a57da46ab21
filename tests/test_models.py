import pytest
import torch

from fgbg.models.convgen import ConvGen
from fgbg.models.net import Net


def _inputs(size: int, channels: int = 3, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A background and a composite, ``(batch, channels, size, size)`` each."""
    g = torch.Generator().manual_seed(0)
    return tuple(torch.rand(batch, channels, size, size, generator=g) for _ in range(2))


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model_cls", [Net, ConvGen])
@pytest.mark.parametrize("size", [16, 64])
def test_outputs_are_one_channel_at_input_size(model_cls, size):
    mask_logits, depth = model_cls()(*_inputs(size))
    assert mask_logits.shape == depth.shape == (2, 1, size, size)


def test_parameter_counts():
    # The source document's models with 1-channel heads: Net ~7.0M, ConvGen ~0.3M.
    assert _n_params(Net()) == 6_978_528
    assert _n_params(ConvGen()) == 303_424


@pytest.mark.parametrize("model_cls", [Net, ConvGen])
def test_channel_arguments(model_cls):
    mask_logits, depth = model_cls(in_channels=1, mask_channels=2, depth_channels=3)(*_inputs(16, channels=1))
    assert mask_logits.shape == (2, 2, 16, 16) and depth.shape == (2, 3, 16, 16)


def _capture(module: torch.nn.Module, store: dict, name: str) -> None:
    module.register_forward_hook(lambda _m, _in, out: store.__setitem__(name, out))


def test_net_mask_is_the_mask_branch_and_depth_the_trunk():
    net, seen = Net(), {}
    _capture(net.layer10, seen, "mask_branch")
    _capture(net.layer4, seen, "trunk")
    mask_logits, depth = net(*_inputs(16))
    assert torch.equal(mask_logits, seen["mask_branch"]) and torch.equal(depth, seen["trunk"])


def test_convgen_splits_its_head_mask_first():
    model, seen = ConvGen(mask_channels=1, depth_channels=2), {}
    _capture(model.convblock4, seen, "head")
    mask_logits, depth = model(*_inputs(16))
    assert torch.equal(mask_logits, seen["head"][:, :1]) and torch.equal(depth, seen["head"][:, 1:])
