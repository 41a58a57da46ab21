"""``python generate.py stage=measure depth=<teacher>``: the depth stage's time over one zip against the
model's forward alone on as many images. The target on a GPU: ``ratio`` (stage / forward) within 1.3."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from fgbg.build.label import label_zip, survey
from fgbg.build.teacher import Teacher, require_teacher


def measure(path: Path, teacher: Teacher, quality: int, workers: int | None = None) -> dict:
    """Time the depth stage over zip ``path`` against the model's forward alone on as many images.

    The stage writes its zip to a temporary folder (``path`` is left alone). The forward time is the
    model's call on normalised ``input_size`` batches already on the device, synchronised at both ends.
    """
    require_teacher(teacher, "measure").load()
    n = survey(path)[2]
    forward_s = _forward_seconds(teacher, n)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        label_zip(path, teacher, quality, workers, dest=Path(tmp) / path.name)
        stage_s = time.perf_counter() - start
    return {
        "zip": str(path),
        "images": n,
        "device": str(teacher.device),
        "teacher": teacher.describe(),
        "batch_size": teacher.batch_size,
        "stage_s": stage_s,
        "forward_s": forward_s,
        "stage_images_per_s": n / stage_s,
        "forward_images_per_s": n / forward_s,
        "ratio": stage_s / forward_s,
    }


def _forward_seconds(teacher: Teacher, n: int) -> float:
    """Seconds of the loaded ``teacher``'s model on ``n`` random inputs in its batches, after a warm-up."""
    size, batch = teacher.size, teacher.batch_size
    pixels = torch.randn(batch, 3, size, size, device=teacher.device).to(teacher.dtype)
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    with torch.inference_mode():
        for b in set(sizes):  # warm-up: kernels chosen for each batch shape, memory cached
            teacher.raw_prediction(pixels[:b])
        _synchronize(teacher.device)
        start = time.perf_counter()
        for b in sizes:
            teacher.raw_prediction(pixels[:b])
        _synchronize(teacher.device)
        return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
