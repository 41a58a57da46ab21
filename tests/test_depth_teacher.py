import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fgbg.depth import Teacher, TeacherError
from tests.paths import CONF_DIR

TINY_SIZE = 28  # the tiny teacher's input: 2x2 patches of 14


def save_tiny_teacher(folder: Path) -> Path:
    """A random Depth Anything (41k parameters) and its image processor, saved as a hub download would be."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        image_size=TINY_SIZE, patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False,
    )
    # A wider initialisation than the default 0.02, whose random head predicts ~1e-7 everywhere.
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8, head_hidden_size=4, initializer_range=0.3,
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(
        size={"height": TINY_SIZE, "width": TINY_SIZE}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder


def make_teacher(model: str | Path, **overrides) -> Teacher:
    """A teacher with conf/depth/hub.yaml's settings, as generate.py makes one, on the CPU (float32 everywhere)."""
    overrides = {"device": "cpu", **overrides}
    return instantiate(OmegaConf.load(CONF_DIR / "depth" / "hub.yaml"), model=str(model), **overrides)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("tiny_teacher"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny model runs about as fast as the decode threads beside it; on shared cores, OpenMP threads
    spinning while those run make each forward wait (the tests take 5x longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    """No network wait: huggingface_hub reads HF_HUB_OFFLINE once, at import, so set both."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize(
    "depth, model",
    [("depth_anything_v2_small", "depth-anything/Depth-Anything-V2-Small-hf"), ("dpt_hybrid", "Intel/dpt-hybrid-midas")],
)
def test_teacher_configs_compose_without_loading(depth, model):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=[f"depth={depth}"])
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
