import math

import lightning as L
import numpy as np
import pytest
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_sum
from torchmetrics.wrappers.abstract import WrapperMetric

from fgbg.build.scene_depth import SceneDepth
from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.checks import DatasetError
from fgbg.training.depth_metrics import (
    DEPTH_FLOOR,
    GREY_LEVELS,
    AbsRel,
    Aligned,
    DeltaAccuracy,
    DepthSpread,
    MetricDepth,
    RelativeDisparity,
    depth_space,
)
from fgbg.training.metrics import BoundaryF, BoundaryIoU, MaskDepthMetrics, PerImageIoU
from fgbg.training.module import build_module
from tests.helpers.configs import module_config
from tests.helpers.data import fake_loader

MASK_NAMES = ("mask_iou", "mask_dice", "mask_iou_per_image", "mask_boundary_iou", "mask_boundary_f")
NAMES = (*MASK_NAMES, "depth_rmse", "depth_mae", "depth_abs_rel", "depth_delta1", "depth_ssim", "depth_spread")
SPACES = (GREY_LEVELS, RelativeDisparity(), MetricDepth(0.5, 10.0))
# SSIM's constants for data range 1: (0.01 * 1)^2 and (0.03 * 1)^2.
C1, C2 = 1e-4, 9e-4


def _image(values) -> torch.Tensor:
    """A 2x2 pattern of 4 values, row by row, tiled to ``(1, 1, 16, 16)`` (SSIM's window needs the room)."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2).repeat(1, 1, 8, 8)


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return (mask * 2 - 1) * 10  # sigmoid: ~1 where mask is 1, ~0 where 0


def _compute(mask_logits, depth, mask_target, depth_target, space=GREY_LEVELS) -> dict[str, float]:
    metrics = MaskDepthMetrics(space=space)
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
                "depth_delta1": 1, "depth_ssim": 1, "mask_iou_per_image": 1, "mask_boundary_iou": 1,
                "mask_boundary_f": 1, "depth_spread": depth.std(unbiased=False).item()}
    assert got == pytest.approx(expected, abs=1e-6)


def test_all_wrong():
    mask, _ = _scene()
    target, pred = torch.full_like(mask, 0.5), torch.ones_like(mask)
    got = _compute(_logits(1 - mask), pred, mask, target)
    # Constant images: SSIM is its luminance term, (2 * 0.5 * 1 + C1) / (0.5^2 + 1^2 + C1).
    expected = {"mask_iou": 0, "mask_dice": 0, "depth_rmse": 0.5, "depth_mae": 0.5, "depth_abs_rel": 1,
                "depth_delta1": 0, "depth_ssim": (1 + C1) / (1.25 + C1), "mask_iou_per_image": 0,
                "mask_boundary_iou": 0, "depth_spread": 0,
                "mask_boundary_f": 1}  # the complement's contour lies 1 px outside the target's: within tolerance
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
    for space in SPACES:
        halves = MaskDepthMetrics(space=space)
        for i in (slice(0, 1), slice(1, 2)):
            halves.update(logits[i], pred[i], mask[i], depth[i])
        whole = MaskDepthMetrics(space=space)
        whole.update(logits, pred, mask, depth)
        for name, value in whole.compute().items():
            assert halves.compute()[name].item() == pytest.approx(value.item(), abs=1e-6), (space, name)

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


def _square(rows: slice, cols: slice, size: int = 12) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[:, :, rows, cols] = 1
    return mask


def _mask_metric(metric, pred, target) -> float:
    metric.update(pred, target.long())
    return metric.compute().item()


def test_per_image_iou_averages_images_and_scores_empty_as_one():
    small_t, small_p = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    small_t[..., :2, :], small_p[..., :2, :] = 1, 1  # 8 px, predicted exactly: IoU 1
    big_t, big_p = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    big_t[..., :2, :], big_p[..., :1, :] = 1, 1  # 16 px, 8 of them predicted: IoU 1/2
    empty = torch.zeros(1, 1, 6, 6)
    per_image = MaskDepthMetrics(with_depth=False)
    for pred, target in ((small_p, small_t), (big_p, big_t)):
        per_image.update(_logits(pred), None, target, None)
    got = per_image.compute()
    assert got["mask_iou_per_image"].item() == pytest.approx((1 + 0.5) / 2)
    assert got["mask_iou"].item() == pytest.approx((8 + 8) / (8 + 16))  # pooled: the big image weighs more
    metric = PerImageIoU()
    for pred, target in ((small_p, small_t), (big_p, big_t), (empty, empty)):
        metric.update(pred, target.long())
    assert metric.compute().item() == pytest.approx((1 + 0.5 + 1) / 3)


def test_boundary_iou_of_a_square_and_its_shift():
    target, pred = _square(slice(2, 8), slice(2, 8)), _square(slice(2, 8), slice(3, 9))
    # 6x6 squares; within 2 px of their contour: all but the inner 2x2, 32 px each. Of the 30 px they share,
    # 2 are in the target's inner 2x2 only, 2 in the prediction's only, 2 in both: 24 in both bands.
    assert _mask_metric(BoundaryIoU(px=2), pred, target) == pytest.approx(24 / (32 + 32 - 24))
    assert _mask_metric(BoundaryIoU(px=2), target, target) == 1.0
    # A wider band takes the whole square: Boundary IoU is then mask IoU, 30 / 42.
    assert _mask_metric(BoundaryIoU(px=3), pred, target) == pytest.approx(30 / 42)
    # The image frame is background (Cheng et al.'s padding): a full mask's band is its 2-px frame.
    full = torch.ones(1, 1, 12, 12)
    metric = BoundaryIoU(px=2)
    metric.update(full, _square(slice(0, 12), slice(0, 11)).long())
    # The full image's band: its 2-px frame, 144 - 8 * 8 = 80 px. The target's (columns 0-10): 132 - 8 * 7 = 76 px,
    # of which column 9 (rows 2-9, 8 px) is not in the frame: 68 in both.
    assert metric.compute().item() == pytest.approx(68 / (80 + 76 - 68))


def test_boundary_f_of_a_square_and_its_shift():
    target, pred = _square(slice(2, 8), slice(2, 8)), _square(slice(2, 8), slice(5, 11))
    # Shifted 3 columns: of each 20-px contour, the 6 px of the far column lie 3 px from the other's contour,
    # the rest within 2 px: precision = recall = 14/20.
    assert _mask_metric(BoundaryF(px=2), pred, target) == pytest.approx(0.7)
    assert _mask_metric(BoundaryF(px=3), pred, target) == pytest.approx(1.0)
    empty = torch.zeros_like(target)
    assert _mask_metric(BoundaryF(), empty, empty) == 1.0
    assert _mask_metric(BoundaryF(), empty, target) == 0.0


def test_scene_grey_levels_to_metres():
    space = MetricDepth(z_near=0.5, z_far=10.0)
    grey = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(space.to_metres(grey), torch.tensor([10.0, math.sqrt(0.5 * 10.0), 0.5]))
    # SceneDepth's own 8-bit encoding comes back within half a grey level: a factor 20 ** (0.5 / 255).
    z = np.array([[0.5, 0.8, 1.0, 2.0, 5.0, 10.0]])
    encoded = SceneDepth(z_near=0.5, z_far=10.0, margin=0.1).encode(z)
    back = space.to_metres(torch.from_numpy(encoded.astype(np.float32) / 255)).numpy()
    assert np.all(np.abs(np.log(back / z)) <= 0.5 / 255 * math.log(20) + 1e-6)


def test_scene_metrics_are_in_metres():
    space = MetricDepth(z_near=0.5, z_far=10.0)
    mid = math.sqrt(5.0)  # grey 0.5
    target, pred = _image([1, 0.5, 0, 0]), _image([1, 1, 0, 0.5])  # metres: 0.5, mid, 10, 10 / 0.5, 0.5, 10, mid
    mask = _image([1, 0, 0, 0])
    got = _compute(_logits(mask), pred, mask, target, space)
    assert got["depth_abs_rel"] == pytest.approx((abs(0.5 - mid) / mid + abs(mid - 10) / 10) / 4)
    assert got["depth_delta1"] == pytest.approx(2 / 4)  # ratios 1, mid / 0.5 = 4.47, 1, 10 / mid = 4.47
    assert got["depth_rmse_m"] == pytest.approx(math.sqrt(((mid - 0.5) ** 2 + (10 - mid) ** 2) / 4))
    assert got["depth_mae"] == pytest.approx((0.5 + 0.5) / 4)  # grey levels still
    assert "depth_abs_rel_aligned" not in got


def test_alignment_recovers_a_known_scale_and_shift():
    target = _image([0.2, 0.4, 0.9, 0.6])
    pred = torch.cat([(target - 0.3) / 2, (target + 0.1) / 0.5])  # two images, each its own scale and shift
    mask = (target > 0.5).float().repeat(2, 1, 1, 1)
    got = _compute(_logits(mask), pred, mask, target.repeat(2, 1, 1, 1), RelativeDisparity())
    assert got["depth_abs_rel_aligned"] == pytest.approx(0, abs=1e-5)
    assert got["depth_delta1_aligned"] == 1.0
    assert got["depth_abs_rel"] > 0.3 and got["depth_delta1"] < 0.5  # raw: as far off as the scale makes it

    # A prediction below one grey level after alignment is read as one grey level, like the target.
    metric = Aligned(AbsRel())
    metric.update(torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[0.0, 0.5]]]]))
    assert metric.compute().item() == pytest.approx(0, abs=1e-5)


def test_depth_spread_is_the_epoch_standard_deviation():
    spread = DepthSpread()
    spread.update(torch.full((1, 1, 4, 4), 0.2), None)
    spread.update(torch.full((2, 1, 2, 4), 0.6), torch.zeros(2, 1, 2, 4))  # as many pixels, another value
    assert spread.compute().item() == pytest.approx(0.2)
    # Nearly flat, 0.7 +- 1e-4 over 50 batches: float32 sums would give 0 (E[x^2] - E[x]^2 cancels).
    nearly_flat, spread = torch.full((4, 1, 128, 128), 0.7), DepthSpread()
    nearly_flat[..., ::2] += 1e-4
    nearly_flat[..., 1::2] -= 1e-4
    for _ in range(50):
        spread.update(nearly_flat, None)
    assert spread.compute().item() == pytest.approx(1e-4, rel=0.01)


def test_depth_space_from_the_manifest_record():
    scene = SceneDepth(z_near=0.5, z_far=10.0, margin=0.1).describe()
    assert depth_space(scene) == MetricDepth(0.5, 10.0)
    assert depth_space({"source": "teacher", "encoding": "..."}) == RelativeDisparity()
    assert depth_space(None) == GREY_LEVELS
    with pytest.raises(DatasetError, match="settings.depth: unknown source 'lidar'"):
        depth_space({"source": "lidar"})
    with pytest.raises(DatasetError, match="z_near and z_far"):
        depth_space({"source": "scene"})
    with pytest.raises(DatasetError, match="0 < z_near < z_far"):
        depth_space({"source": "scene", "z_near": 10, "z_far": 0.5})


def test_mask_only_metrics_have_no_depth():
    mask, _ = _scene()
    metrics = MaskDepthMetrics("val/", with_depth=False)
    assert metrics.depth is None and metrics.collections() == [metrics.mask]
    metrics.update(_logits(mask), None, mask, None)
    assert set(metrics.compute()) == {f"val/{name}" for name in MASK_NAMES}
    with pytest.raises(ValueError, match="pass depth and depth_target"):
        MaskDepthMetrics().update(_logits(mask), None, mask, None)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__)
def test_every_state_is_summed_across_processes(space):
    metrics = MaskDepthMetrics(space=space)
    leaves = [m for m in metrics.modules() if isinstance(m, Metric) and not isinstance(m, WrapperMetric)]
    assert len(leaves) == len(metrics.mask) + len(metrics.depth)  # wrappers hold one metric each
    for metric in leaves:
        assert metric._reductions and all(fx is dim_zero_sum for fx in metric._reductions.values()), metric


def test_wrapped_metrics_are_logged_by_lightning(tmp_path):
    torch.manual_seed(0)
    module = build_module(module_config())
    space = RelativeDisparity()
    # What the module will hold for teacher data (module.py picks the space from the data).
    module.held_out_metrics["val"] = MaskDepthMetrics("val/", space)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, fake_loader(), fake_loader(6))
    expected = MaskDepthMetrics(space=space)
    with torch.no_grad():
        for batch in fake_loader(6):
            expected.update(*module.eval()(batch[BACKGROUND], batch[COMPOSITE]), batch[MASK], batch[DEPTH])
    logged = {name: trainer.callback_metrics[f"val/{name}"].item() for name in expected.compute()}
    assert logged == pytest.approx({k: v.item() for k, v in expected.compute().items()}, abs=1e-6)
    assert {"depth_abs_rel_aligned", "depth_delta1_aligned"} <= set(logged)
