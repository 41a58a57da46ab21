import kornia
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fgbg.training.losses import MaskDepthLoss, dice_loss, gradient_loss
from tests.helpers.paths import CONF_DIR


def _fixed(seed: int = 0, size: int = 8) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    mask_logits = torch.randn(2, 1, size, size, generator=g) * 3
    depth = torch.rand(2, 1, size, size, generator=g)
    mask_target = (torch.rand(2, 1, size, size, generator=g) > 0.5).float()
    depth_target = torch.rand(2, 1, size, size, generator=g)
    return mask_logits, depth, mask_target, depth_target


def test_seed_loss_is_twice_bce_plus_ssim_loss():
    loss = instantiate(OmegaConf.load(CONF_DIR / "loss" / "document.yaml"))
    mask_logits, depth, mask_target, depth_target = _fixed()
    out = loss(mask_logits, depth, mask_target, depth_target)

    bce = F.binary_cross_entropy_with_logits(mask_logits, mask_target)
    ssim = (1 - kornia.metrics.ssim(depth, depth_target, window_size=3).mean()) / 2
    assert set(out) == {"loss", "loss_mask", "loss_depth", "mask/bce", "depth/ssim"}
    torch.testing.assert_close(out["mask/bce"], bce)
    torch.testing.assert_close(out["depth/ssim"], ssim)
    torch.testing.assert_close(out["loss_mask"], 2 * bce)
    torch.testing.assert_close(out["loss_depth"], ssim)
    torch.testing.assert_close(out["loss"], 2 * bce + ssim)


def test_weights_scale_terms_and_window_reaches_ssim():
    loss = MaskDepthLoss({"bce": 0.5, "dice": 3.0}, {"ssim": 2.0, "l1": 1.0, "gradient": 0.25}, ssim_window=5)
    out = loss(*_fixed(1))
    torch.testing.assert_close(out["loss_mask"], 0.5 * out["mask/bce"] + 3.0 * out["mask/dice"])
    torch.testing.assert_close(out["loss_depth"], 2.0 * out["depth/ssim"] + out["depth/l1"] + 0.25 * out["depth/gradient"])
    torch.testing.assert_close(out["loss"], out["loss_mask"] + out["loss_depth"])
    _, depth, _, depth_target = _fixed(1)
    torch.testing.assert_close(out["depth/ssim"], kornia.losses.ssim_loss(depth, depth_target, window_size=5))


def test_loss_backpropagates_to_both_heads():
    mask_logits, depth, mask_target, depth_target = _fixed()
    mask_logits.requires_grad_(), depth.requires_grad_()
    MaskDepthLoss({"bce": 2.0}, {"ssim": 1.0})(mask_logits, depth, mask_target, depth_target)["loss"].backward()
    assert mask_logits.grad.abs().sum() > 0 and depth.grad.abs().sum() > 0


def test_dice():
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    perfect = (target * 2 - 1) * 50  # sigmoid -> 1 on the foreground, 0 elsewhere
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # p = 0.5 everywhere: sum(p*t) = 1, sum(p) = 2, sum(t) = 2 -> 1 - (2*1 + 1) / (2 + 2 + 1) = 0.4
    assert dice_loss(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(0.4)
    # Per image, then averaged: (0 + 0.4) / 2; pooled over the batch it would be 1 - 7/9.
    both = dice_loss(torch.cat([perfect, torch.zeros(1, 1, 2, 2)]), torch.cat([target, target]))
    assert both.item() == pytest.approx(0.2)
    # An empty target predicted empty scores 0 thanks to the smoothing.
    assert dice_loss(torch.full((1, 1, 2, 2), -50.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_l1():
    target = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    loss = MaskDepthLoss({}, {"l1": 1.0})
    mask = torch.zeros(1, 1, 2, 2)
    assert loss(mask, target, mask, target)["depth/l1"].item() == 0.0
    # |0 - t| = 0, 1, 0.5, 0.5 -> mean 0.5
    assert loss(mask, torch.zeros(1, 1, 2, 2), mask, target)["depth/l1"].item() == pytest.approx(0.5)


def test_gradient():
    target = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    assert gradient_loss(target, target).item() == 0.0
    assert gradient_loss(target + 0.3, target).item() == pytest.approx(0.0, abs=1e-6)  # blind to an offset
    # Against a flat prediction: horizontal differences of the target are 1 (top row) and 0 -> mean 0.5;
    # vertical ones 0 (left column) and -1 -> mean 0.5; total 1.0.
    assert gradient_loss(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(1.0)


def test_unknown_or_no_terms_are_refused():
    with pytest.raises(ValueError, match=r"unknown mask loss term\(s\) \['focal'\]; known: \['bce', 'dice'\]"):
        MaskDepthLoss({"bce": 1.0, "focal": 1.0}, {"ssim": 1.0})
    with pytest.raises(ValueError, match=r"unknown depth loss term\(s\) \['ssmi'\]; known: \['gradient', 'l1', 'ssim'\]"):
        MaskDepthLoss({"bce": 1.0}, {"ssmi": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        MaskDepthLoss({}, {})
