import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from fgbg.build.teacher import Teacher, TeacherError
from tests.helpers.configs import compose_config
from tests.helpers.teacher import TINY_SIZE, make_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.mark.parametrize(
    "depth, model",
    [("depth_anything_v2_small", "depth-anything/Depth-Anything-V2-Small-hf"), ("dpt_hybrid", "Intel/dpt-hybrid-midas")],
)
def test_teacher_configs_compose_without_loading(depth, model):
    cfg = compose_config("generate", overrides=[f"depth={depth}"])
    teacher = instantiate(cfg.depth)
    assert isinstance(teacher, Teacher) and teacher.model == model and teacher.net is None


def test_local_folder_loads_and_is_recorded(tiny_dir):
    teacher = make_teacher(tiny_dir, revision=None, batch_size=8).load()
    assert teacher.describe() == {
        "source": "teacher",
        "model": str(tiny_dir),
        "revision": None,  # a folder has no hub commit
        "input_size": TINY_SIZE,  # the image processor's, as input_size is null
        "dtype": "float32",  # the CPU ignores float16
        "predicts": "disparity",
        "normalize": "image",
        "encoding": "uint8 = 255*(d - min d)/(max d - min d) per image, d = predicted disparity; brighter = nearer",
    }
    images = torch.randint(0, 256, (5, 160, 160, 3), dtype=torch.uint8)
    (depth,) = teacher.predict_batches([images])
    assert depth.shape == (5, 160, 160) and depth.dtype == np.uint8
    assert (depth.min(axis=(1, 2)) == 0).all() and (depth.max(axis=(1, 2)) == 255).all()  # per-image min-max


@pytest.mark.parametrize("predicts, nearer_on_the_right", [("disparity", True), ("depth", False)])
def test_brighter_is_nearer(tiny_dir, predicts, nearer_on_the_right):
    teacher = make_teacher(tiny_dir, batch_size=2, predicts=predicts).load()
    # A prediction growing left to right: disparity (nearer on the right) or metric depth (farther there).
    ramp = torch.linspace(1.0, 5.0, TINY_SIZE).expand(2, TINY_SIZE, TINY_SIZE)
    teacher.net = lambda pixel_values: SimpleNamespace(predicted_depth=ramp)
    (depth,) = teacher.predict_batches([torch.zeros((2, 160, 160, 3), dtype=torch.uint8)])
    left, right = depth[:, :, :20].mean(), depth[:, :, -20:].mean()
    assert (right > left + 100) if nearer_on_the_right else (left > right + 100)


def test_input_size_the_model_cannot_take_is_refused(tiny_dir):
    with pytest.raises(TeacherError, match="input_size=30: .* takes multiples of 14"):
        make_teacher(tiny_dir, input_size=30, batch_size=8).load()


def test_missing_weights_say_how_to_fetch_them(offline):
    start = time.perf_counter()
    with pytest.raises(TeacherError) as caught:
        make_teacher("fgbg-tests/no-such-depth-model").load()
    message = str(caught.value)
    assert "depth teacher 'fgbg-tests/no-such-depth-model'" in message and "HF_HUB_OFFLINE=1" in message
    assert "`hf download fgbg-tests/no-such-depth-model`" in message and "depth.model=/path/to/folder" in message
    assert time.perf_counter() - start < 10  # no network retries


def test_missing_or_empty_folder_is_named(tmp_path):
    with pytest.raises(TeacherError, match="depth.model=/no/such/folder: no such folder"):
        make_teacher("/no/such/folder").load()
    with pytest.raises(TeacherError, match=f"depth.model={tmp_path}: "):
        make_teacher(tmp_path).load()
