import kornia
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fgbg.errors import ConfigError
from fgbg.training.losses import (
    EDGE_BAND_PX,
    MaskDepthLoss,
    boundary_bce,
    dice_loss,
    gradient_loss,
    scale_and_shift,
    ssi_gradient_loss,
    ssi_loss,
)
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
    known_mask = r"\['bce', 'boundary_bce', 'dice'\]"
    with pytest.raises(ConfigError, match=r"loss.mask_terms: unknown mask loss term\(s\) \['focal'\]; known: " +
                       known_mask):
        MaskDepthLoss({"bce": 1.0, "focal": 1.0}, {"ssim": 1.0})
    known_depth = r"\['gradient', 'l1', 'ssi', 'ssi_gradient', 'ssim'\]"
    with pytest.raises(ConfigError, match=r"unknown depth loss term\(s\) \['ssmi'\]; known: " + known_depth):
        MaskDepthLoss({"bce": 1.0}, {"ssmi": 1.0})
    with pytest.raises(ConfigError, match="at least one"):
        MaskDepthLoss({}, {})


def _ramp(size: int = 8) -> torch.Tensor:
    """``(1, 1, S, S)``: a smooth, non-planar depth map in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return (0.2 + 0.5 * x * y + 0.2 * y**2).view(1, 1, size, size)


def test_alignment_recovers_a_known_scale_and_shift():
    target = torch.cat([_ramp(), 1 - _ramp()])
    pred = torch.cat([(target[:1] - 0.3) / 2, (target[1:] + 0.1) / 0.5])  # pred = (target - b) / a, per image
    scale, shift = scale_and_shift(pred, target)
    torch.testing.assert_close(scale.flatten(), torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(shift.flatten(), torch.tensor([0.3, -0.1]))
    assert ssi_loss(pred, target).item() == pytest.approx(0, abs=1e-6)
    assert ssi_gradient_loss(pred, target).item() == pytest.approx(0, abs=1e-5)
    assert F.l1_loss(pred, target).item() > 0.1


def test_ssi_terms_by_hand():
    pred, target = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]), torch.tensor([[[[0.0, 1.0], [1.0, 2.0]]]])
    # cov(p, t) = 3/4, var(p) = 5/4 -> s = 0.6, t = 1 - 0.6 * 1.5 = 0.1: aligned 0.1, 0.7, 1.3, 1.9.
    scale, shift = scale_and_shift(pred, target)
    assert (scale.item(), shift.item()) == pytest.approx((0.6, 0.1))
    # Residual 0.1, -0.3, 0.3, -0.1: mean |r| = 0.2; |dx| 0.4, 0.4 and |dy| 0.2, 0.2 over 4 pixels = 0.3
    # (the coarser scales of a 2x2 image have no neighbours).
    assert ssi_loss(pred, target).item() == pytest.approx(0.2)
    assert ssi_gradient_loss(pred, target).item() == pytest.approx(0.3)


def test_ssi_gradient_sums_four_scales():
    # A flat prediction aligns to the target's mean (scale 0): the residual's gradients are the target's.
    flat = torch.full((1, 1, 8, 8), 0.5)
    step = (torch.arange(8) >= 4).float().view(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous()  # one edge, x = 3.5
    scale, shift = scale_and_shift(flat, step)
    assert (scale.item(), shift.item()) == (0.0, 0.5)
    assert ssi_loss(flat, step).item() == pytest.approx(0.5)
    # Step 1: 8 rows x one jump of 1 over 64 px; step 2: 4 x 1 over 16; step 4: 2 x 1 over 4; step 8: 1 px.
    assert ssi_gradient_loss(flat, step).item() == pytest.approx(8 / 64 + 4 / 16 + 2 / 4)
    assert ssi_gradient_loss(flat, step, scales=1).item() == pytest.approx(8 / 64)


def test_ssi_over_valid_pixels_ignores_the_others():
    target = _ramp()
    pred = (target - 0.1) / 3
    pred[..., 0, 0] = 5.0  # an outlier, marked invalid
    valid = torch.ones_like(target)
    valid[..., 0, 0] = 0
    assert ssi_loss(pred, target, valid).item() == pytest.approx(0, abs=1e-6)
    assert ssi_gradient_loss(pred, target, valid).item() == pytest.approx(0, abs=1e-5)
    assert ssi_loss(pred, target).item() > 0.01


def test_ssi_backpropagates():
    pred, target = torch.rand(2, 1, 8, 8, requires_grad=True), torch.rand(2, 1, 8, 8)
    (ssi_loss(pred, target) + ssi_gradient_loss(pred, target)).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_boundary_bce_counts_the_edge_band_only():
    target = torch.zeros(1, 1, 12, 12)
    target[..., 3:7, 3:7] = 1
    c = 1.5
    # Within 3 px of both sides: the 4x4 square (16 fg px) and the rest of its 10x10 dilation (84 bg px).
    expected = (16 * F.softplus(torch.tensor(-c)) + 84 * F.softplus(torch.tensor(c))) / 100
    assert boundary_bce(torch.full_like(target, c), target, px=3).item() == pytest.approx(expected.item())
    # Right within the band, wrong beyond it: BCE sees the error, the boundary term does not.
    right = (target * 2 - 1) * 20
    logits = right.clone()
    logits[..., 10:, 10:] = 20.0
    assert boundary_bce(logits, target, px=3).item() == pytest.approx(0, abs=1e-6)
    assert F.binary_cross_entropy_with_logits(logits, target).item() > 0.5
    # No edge, nothing to weigh.
    assert boundary_bce(torch.zeros_like(target), torch.zeros_like(target)).item() == 0.0
    assert EDGE_BAND_PX == 3


def test_mask_only_data_trains_the_mask_alone():
    mask_logits, depth, mask_target, _ = _fixed()
    mask_logits.requires_grad_()
    loss = MaskDepthLoss({"bce": 1.0, "dice": 2.0}, {"l1": 1.0})
    out = loss(mask_logits, depth, mask_target, None)
    assert set(out) == {"loss", "loss_mask", "mask/bce", "mask/dice"}
    torch.testing.assert_close(out["loss"], out["mask/bce"] + 2 * out["mask/dice"])
    out["loss"].backward()
    assert mask_logits.grad.abs().sum() > 0
    assert set(loss(mask_logits, None, mask_target, None)) == set(out)  # a model without a depth head
    with pytest.raises(ConfigError, match="loss.mask_terms is empty but the data has no depth maps"):
        MaskDepthLoss({}, {"ssi": 1.0})(mask_logits, depth, mask_target, None)


def _loss(name: str) -> MaskDepthLoss:
    return instantiate(OmegaConf.load(CONF_DIR / "loss" / f"{name}.yaml"))


def test_matting_recipe():
    loss = _loss("matting")
    assert {k: w for k, (_, w) in loss.mask_terms.items()} == {"bce": 1.0, "dice": 1.0, "boundary_bce": 1.0}
    assert {k: w for k, (_, w) in loss.depth_terms.items()} == {"l1": 1.0, "ssim": 1.0, "gradient": 0.5}
    out = loss(*_fixed(2))
    torch.testing.assert_close(out["loss_depth"], out["depth/l1"] + out["depth/ssim"] + 0.5 * out["depth/gradient"])
    loss_mask = out["mask/bce"] + out["mask/dice"] + out["mask/boundary_bce"]
    torch.testing.assert_close(out["loss"], loss_mask + out["loss_depth"])


def test_ssi_recipe_ignores_each_images_scale_and_shift():
    loss = _loss("ssi")
    assert {k: w for k, (_, w) in loss.mask_terms.items()} == {"bce": 1.0, "dice": 1.0}
    assert {k: w for k, (_, w) in loss.depth_terms.items()} == {"ssi": 1.0, "ssi_gradient": 0.5}
    mask_logits, depth, mask_target, depth_target = _fixed(3)
    out = loss(mask_logits, depth, mask_target, depth_target)
    rescaled = depth * torch.tensor([0.5, 3.0]).view(2, 1, 1, 1) + torch.tensor([0.2, -1.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(loss(mask_logits, rescaled, mask_target, depth_target)["loss_depth"], out["loss_depth"])
    torch.testing.assert_close(out["loss_depth"], out["depth/ssi"] + 0.5 * out["depth/ssi_gradient"])
