import math

import lightning as L
import pytest
import torch

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.training.metrics import DEPTH_FLOOR, AbsRel, DeltaAccuracy, MaskDepthMetrics
from fgbg.training.module import build_module
from tests.helpers.configs import module_config
from tests.helpers.data import fake_loader

NAMES = ("mask_iou", "mask_dice", "depth_rmse", "depth_mae", "depth_abs_rel", "depth_delta1", "depth_ssim")
# SSIM's constants for data range 1: (0.01 * 1)^2 and (0.03 * 1)^2.
C1, C2 = 1e-4, 9e-4


def _image(values) -> torch.Tensor:
    """A 2x2 pattern of 4 values, row by row, tiled to ``(1, 1, 16, 16)`` (SSIM's window needs the room)."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2).repeat(1, 1, 8, 8)


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return (mask * 2 - 1) * 10  # sigmoid: ~1 where mask is 1, ~0 where 0


def _compute(mask_logits, depth, mask_target, depth_target) -> dict[str, float]:
    metrics = MaskDepthMetrics()
    metrics.update(mask_logits, depth, mask_target, depth_target)
    return {name: value.item() for name, value in metrics.compute().items()}


def _scene(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A square mask and a depth ramp with a band of 0 (the farthest 8-bit level), ``(2, 1, S, S)`` each."""
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, 4:10, 5:12] = 1
    depth = torch.linspace(0, 1, size).view(1, 1, size, 1).expand(2, 1, size, size).clone()
    depth[:, :, :2] = 0
    return mask, depth


def test_perfect_prediction():
    mask, depth = _scene()
    got = _compute(_logits(mask), depth, mask, depth)
    expected = {"mask_iou": 1, "mask_dice": 1, "depth_rmse": 0, "depth_mae": 0, "depth_abs_rel": 0,
                "depth_delta1": 1, "depth_ssim": 1}
    assert got == pytest.approx(expected, abs=1e-6)


def test_all_wrong():
    mask, _ = _scene()
    target, pred = torch.full_like(mask, 0.5), torch.ones_like(mask)
    got = _compute(_logits(1 - mask), pred, mask, target)
    # Constant images: SSIM is its luminance term, (2 * 0.5 * 1 + C1) / (0.5^2 + 1^2 + C1).
    expected = {"mask_iou": 0, "mask_dice": 0, "depth_rmse": 0.5, "depth_mae": 0.5, "depth_abs_rel": 1,
                "depth_delta1": 0, "depth_ssim": (1 + C1) / (1.25 + C1)}
    assert got == pytest.approx(expected, abs=1e-6)


def test_known_partial_case():
    mask_target, mask_pred = _image([1, 1, 0, 0]), _image([1, 0, 1, 0])  # TP 1, FN 1, FP 1, TN 1
    target, pred = _image([0.5, 0.5, 0.4, 0.8]), _image([0.5, 0.6, 0.2, 0.9])
    got = _compute(_logits(mask_pred), pred, mask_target, target)
    assert got["mask_iou"] == pytest.approx(1 / 3)  # TP / (TP + FP + FN)
    assert got["mask_dice"] == pytest.approx(1 / 2)  # 2 TP / (2 TP + FP + FN)
    assert got["depth_mae"] == pytest.approx((0 + 0.1 + 0.2 + 0.1) / 4)
    assert got["depth_rmse"] == pytest.approx(math.sqrt((0 + 0.01 + 0.04 + 0.01) / 4))
    assert got["depth_abs_rel"] == pytest.approx((0 + 0.1 / 0.5 + 0.2 / 0.4 + 0.1 / 0.8) / 4)
    assert got["depth_delta1"] == pytest.approx(3 / 4)  # ratios 1, 1.2, 2, 1.125


def test_zero_depth_is_read_as_one_grey_level():
    target, pred = _image([0, 0, DEPTH_FLOOR, 0.5]), _image([0, 2 * DEPTH_FLOOR, 0, 0.5])
    abs_rel, delta = AbsRel(), DeltaAccuracy()
    abs_rel.update(pred, target)
    delta.update(pred, target)
    # Floored: |2f - f| / f = 1 on the second pixel, 0 elsewhere; ratios 1, 2, 1, 1.
    assert abs_rel.compute().item() == pytest.approx(1 / 4)
    assert delta.compute().item() == pytest.approx(3 / 4)


def test_two_batches_equal_their_concatenation():
    g = torch.Generator().manual_seed(0)
    mask, depth = _scene()
    logits, pred = torch.randn(mask.shape, generator=g), torch.rand(depth.shape, generator=g)
    halves = MaskDepthMetrics()
    for i in (slice(0, 1), slice(1, 2)):
        halves.update(logits[i], pred[i], mask[i], depth[i])
    whole = MaskDepthMetrics()
    whole.update(logits, pred, mask, depth)
    for name, value in whole.compute().items():
        assert halves.compute()[name].item() == pytest.approx(value.item(), abs=1e-6), name

    # The delta counts add up exactly over batches of different sizes.
    delta_parts, delta_whole = DeltaAccuracy(), DeltaAccuracy()
    delta_parts.update(pred[:1, :, :5], depth[:1, :, :5])
    delta_parts.update(pred[1:], depth[1:])
    delta_whole.update(torch.cat([pred[:1, :, :5].flatten(), pred[1:].flatten()]),
                       torch.cat([depth[:1, :, :5].flatten(), depth[1:].flatten()]))
    assert delta_parts.hits == delta_whole.hits and delta_parts.total == delta_whole.total


def test_module_logs_epoch_metrics_of_the_last_validation_only(tmp_path):
    torch.manual_seed(0)
    module = build_module(module_config())
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, num_sanity_val_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, fake_loader(), fake_loader(6))
    logged = {name: trainer.callback_metrics[f"val/{name}"].item() for name in NAMES}

    # The same weights over the whole validation set, by hand: the sanity check's batches are not in it.
    expected = MaskDepthMetrics()
    with torch.no_grad():
        for batch in fake_loader(6):
            expected.update(*module.eval()(batch[BACKGROUND], batch[COMPOSITE]), batch[MASK], batch[DEPTH])
    assert logged == pytest.approx({k: v.item() for k, v in expected.compute().items()}, abs=1e-6)

    trainer.test(module, fake_loader(6))
    assert {f"test/{name}" for name in NAMES} <= set(trainer.callback_metrics)
