"""A tiny, randomly initialised depth teacher saved as a hub download would be: the teacher's code runs offline."""

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from fgbg.build.teacher import Teacher, save_untrained
from tests.helpers.paths import CONF_DIR

TINY_SIZE = 28  # the tiny teacher's input: 2x2 patches of 14


def save_tiny_teacher(folder: Path) -> Path:
    """A random Depth Anything (41k parameters) and its image processor, saved as a hub download would be."""
    backbone = dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, out_indices=[1, 2, 3, 4])
    # A wider initialisation than the default 0.02, whose random head predicts ~1e-7 everywhere.
    head = dict(
        reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8, head_hidden_size=4,
        initializer_range=0.3,
    )
    return save_untrained(folder, backbone, head, TINY_SIZE)


def make_teacher(model: str | Path, **overrides) -> Teacher:
    """A teacher with conf/depth/hub.yaml's settings, as generate.py makes one, on the CPU (float32 everywhere)."""
    overrides = {"device": "cpu", **overrides}
    return instantiate(OmegaConf.load(CONF_DIR / "depth" / "hub.yaml"), model=str(model), **overrides)
