"""The background-subtraction baseline: its threshold choice, its clean-up, and train.py / eval.py around it."""

import json

import pytest
import torch
from torchmetrics.functional.classification import binary_jaccard_index

from fgbg.errors import ConfigError
from fgbg.models.subtraction import Subtraction, difference_score
from fgbg.tasks.evaluate import evaluate
from fgbg.tasks.train import train
from fgbg.training.module import load_module
from tests.helpers.configs import compose_config, train_config


def _model(kernel_sizes=(0,), bins: int = 1024) -> Subtraction:
    return Subtraction(bins=bins, kernel_sizes=list(kernel_sizes), refine_factors=[0.5, 0.75, 1.0, 1.5, 2.0])


def _batches(score: torch.Tensor, mask: torch.Tensor, per_batch: int = 2):
    """``(background, composite, mask)`` batches whose difference score is ``score`` ``(N, 1, H, W)``: a zero
    plate, and the score in one channel of a 3-channel composite (the others smaller, so the max is it)."""
    background = torch.zeros(score.shape[0], 3, *score.shape[2:])
    composite = torch.cat([score * 0.5, score, score * 0.25], dim=1)
    return [
        (background[i : i + per_batch], composite[i : i + per_batch], mask[i : i + per_batch])
        for i in range(0, score.shape[0], per_batch)
    ]


def _predicted(model: Subtraction, batches) -> torch.Tensor:
    return torch.cat([model(background, composite)[0] for background, composite, _ in batches]) > 0


def _iou(predicted: torch.Tensor, mask: torch.Tensor) -> float:
    return float(binary_jaccard_index(predicted.long(), mask.long()))


def test_the_score_is_the_largest_channel_difference():
    background = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    composite = torch.tensor([0.6, 0.1, 0.55]).view(1, 3, 1, 1)
    assert difference_score(background, composite).item() == pytest.approx(0.4)


def test_separable_scores_get_a_threshold_between_the_classes():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(6, 1, 8, 8, generator=g) > 0.7).float()
    uniform = torch.rand(mask.shape, generator=g)
    score = torch.where(mask > 0, 0.6 + 0.4 * uniform, 0.2 * uniform)  # foreground in [0.6, 1], background below 0.2
    model = _model()
    iou = model.calibrate(_batches(score, mask))
    assert iou == 1.0 and 0.2 < float(model.threshold) < 0.6 and int(model.opening) == 0
    assert torch.equal(_predicted(model, _batches(score, mask)), mask > 0)


def test_the_histogram_iou_is_the_direct_iou_and_the_best_edge():
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(4, 1, 16, 16, generator=g) > 0.6).float()
    score = (torch.rand(mask.shape, generator=g) * 0.5 + 0.3 * mask).clamp(0, 1)  # overlapping classes
    model = _model(bins=64)
    iou = model.calibrate(_batches(score, mask))
    assert 0.3 < iou < 1
    assert iou == pytest.approx(_iou(_predicted(model, _batches(score, mask)), mask), abs=1e-6)
    # No threshold on the edges does better, computed pixel by pixel.
    edges = torch.linspace(0, 1, 65)
    direct = [_iou(score > edge, mask) for edge in edges]
    assert iou == pytest.approx(max(direct), abs=1e-6) and float(model.threshold) in edges.tolist()


def _square_with_noise() -> tuple[torch.Tensor, torch.Tensor]:
    """A 6 x 6 foreground square per image scoring 0.5, isolated background pixels scoring 0.5 too, and the rest
    of the background 0.2 (grain: a threshold below it makes the whole image foreground)."""
    mask = torch.zeros(4, 1, 24, 24)
    mask[:, :, 4:10, 8:14] = 1
    score = 0.2 + 0.3 * mask
    noise = torch.zeros_like(mask)
    noise[:, :, 16::4, 2::5] = 1  # single pixels, 4 and 5 apart
    return torch.where(noise > 0, 0.5, score), mask


def test_the_opening_removes_isolated_noise_pixels():
    score, mask = _square_with_noise()
    plain = _model(kernel_sizes=[0])
    assert plain.calibrate(_batches(score, mask)) < 0.9  # the noise scores as high as the foreground
    model = _model(kernel_sizes=[0, 3])
    assert model.calibrate(_batches(score, mask)) == 1.0 and int(model.opening) == 3
    mask_logits, depth = model(*_batches(score, mask, per_batch=4)[0][:2])
    assert depth is None and mask_logits.shape == mask.shape
    assert torch.equal(torch.sigmoid(mask_logits) > 0.5, mask > 0)  # the logits' sign is the mask
    assert "threshold" in model.describe() and "opening 3 px" in model.describe()


def test_a_one_shot_iterator_is_read_for_both_passes():
    score, mask = _square_with_noise()
    model = _model(kernel_sizes=[0, 3])
    assert model.calibrate(iter(_batches(score, mask))) == 1.0 and int(model.opening) == 3


def test_it_refuses_to_predict_before_calibration_and_bad_kernel_sizes():
    with pytest.raises(RuntimeError, match="calibrate"):
        _model()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    for sizes in ([], [2], [0, 1]):
        with pytest.raises(ConfigError, match="model.kernel_sizes"):
            _model(kernel_sizes=sizes)


def test_train_refuses_normalised_inputs(small_dataset, tmp_path):
    cfg = train_config(small_dataset, tmp_path, "model=subtraction", "data.normalize=true", "callbacks=none")
    with pytest.raises(ConfigError, match="data.normalize"):
        train(cfg)


def test_train_calibrates_tests_and_saves_what_eval_reloads(small_dataset, tmp_path, one_torch_thread):
    run = tmp_path / "run"
    metrics = train(train_config(small_dataset, run, "model=subtraction", "data.image_size=16"))
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["model"] == "Subtraction" and summary["parameters"] == 0 and summary["steps"] == 0
    assert 0 < summary["test/mask_iou"] <= 1 and summary["test/mask_iou"] == pytest.approx(metrics["test/mask_iou"])
    module = load_module(run / "checkpoints" / "last.ckpt")
    net = module.net
    assert isinstance(net, Subtraction) and 0 < float(net.threshold) < 1
    # The validation IoU torchmetrics logged is the one the calibration maximised, on the same pixels.
    assert summary["val/mask_iou"] == pytest.approx(float(net.calibration_iou), abs=1e-5)
    given = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"paths.output_dir={tmp_path / 'eval'}",
             "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    evaluated = evaluate(compose_config("eval", given), overrides=given[:1])
    assert evaluated["test/mask_iou"] == pytest.approx(summary["test/mask_iou"], abs=1e-6)
