"""Shared fixtures: one small generated dataset per test session."""

from pathlib import Path

import pytest

from fgbg.depth import SceneDepth
from fgbg.generation import Settings, generate
from fgbg.sources import SampleScenes

# 12 backgrounds x 12 foregrounds -> batch 1 (fg 1-10) and batch 2 (fg 11-12); 2 placements keep it fast.
SMALL = Settings(n_bg=12, n_fg=12, placements=2, seed=0, jpeg_quality=90)


def make_dataset(out_dir: Path, settings: Settings = SMALL, **kwargs) -> list[Path]:
    return generate(SampleScenes(settings.seed), SceneDepth(), out_dir, settings, show_progress=False, **kwargs)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """Folder holding the SMALL sample dataset's two batch zips (read-only for tests)."""
    out = tmp_path_factory.mktemp("small")
    make_dataset(out, workers=1)
    return out
