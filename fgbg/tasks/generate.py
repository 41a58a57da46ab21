"""``python generate.py``'s body: the stage asked for, with the objects its config makes.

``stage=all``: composites (and scene depth, or a teacher's labels afterwards); ``stage=depth``: label the zips
already in ``out_dir`` with a teacher; ``stage=measure``: time the depth stage against the model's forward.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from fgbg.build.batch_zip import Settings
from fgbg.build.generation import generate
from fgbg.build.label import label_zips
from fgbg.build.teacher import require_teacher
from fgbg.errors import ConfigError, check_choice, check_int
from fgbg.format.zips import batch_zips
from fgbg.tools.measure import measure

log = logging.getLogger(__name__)
STAGES = ("all", "depth", "measure")


def generate_task(cfg: DictConfig) -> None:
    """Run ``cfg.stage`` of ``conf/generate.yaml``; :class:`~fgbg.errors.FgbgError` for what a user can fix."""
    check_choice("stage", cfg.stage, STAGES)
    _fill_source_defaults(cfg)
    depth = instantiate(cfg.depth) if cfg.depth else None
    if cfg.stage == "measure":
        _measure(cfg, depth)
        return
    written = _composites(cfg, depth) if cfg.stage == "all" else _label(cfg, depth)
    log.info("wrote %d zip(s) to %s", len(written), cfg.out_dir)


def _fill_source_defaults(cfg: DictConfig) -> None:
    """Set what ``source=folders`` leaves to the source (null): ``out_dir``, ``<paths.data_dir>/<its dataset_name>``,
    and for ``stage=all`` ``n_bg`` / ``n_fg``, the images in its folders (a number given is checked against them)."""
    source = instantiate(cfg.source)
    if cfg.out_dir is None:
        name = getattr(source, "dataset_name", None)
        if name is None:
            raise ConfigError("out_dir=null: only source=folders names its own output folder; set out_dir")
        cfg.out_dir = str(Path(cfg.paths.data_dir) / name)
        log.info("out_dir: %s (named after the source; set out_dir to choose another)", cfg.out_dir)
    if cfg.stage == "all" and (cfg.n_bg is None or cfg.n_fg is None):
        cfg.n_bg, cfg.n_fg = source.counts(cfg.n_bg, cfg.n_fg)
        log.info("source: %d background(s), %d foreground(s)", cfg.n_bg, cfg.n_fg)


def _composites(cfg: DictConfig, depth) -> list:
    settings = Settings(
        n_bg=cfg.n_bg, n_fg=cfg.n_fg, placements=cfg.placements, seed=cfg.seed, jpeg_quality=cfg.jpeg_quality
    )
    return generate(
        source=instantiate(cfg.source),
        depth=depth,
        out_dir=cfg.out_dir,
        settings=settings,
        batch=cfg.batch,
        workers=cfg.workers,
        overwrite=cfg.overwrite,
        show_progress=cfg.progress,
        wait_for_lock=cfg.wait_for_lock,
    )


def _label(cfg: DictConfig, depth) -> list:
    """The depth stage over the zips in ``out_dir`` (only ``batch``'s when given)."""
    if cfg.batch is not None:
        check_int("batch", cfg.batch, 1)
    check_int("jpeg_quality", cfg.jpeg_quality, 1, 100)
    teacher = require_teacher(depth, "depth")
    paths = list(batch_zips(cfg.out_dir, cfg.batch).values())
    return label_zips(paths, teacher, cfg.jpeg_quality, cfg.workers, cfg.overwrite, cfg.progress, cfg.wait_for_lock)


def _measure(cfg: DictConfig, depth) -> None:
    """Time the depth stage over the first zip in ``out_dir`` (``batch``'s when given) and log the figures."""
    path = next(iter(batch_zips(cfg.out_dir, cfg.batch).values()))
    result = measure(path, depth, cfg.jpeg_quality, cfg.workers)
    log.info(
        "depth stage %.2f s, model forward %.2f s on %d images: ratio %.2f (%s)",
        result["stage_s"], result["forward_s"], result["images"], result["ratio"], json.dumps(result),
    )
