"""Build and label the batch zips.

``python generate.py [source=sample|folders] [depth=scene|none|<teacher>] [n_bg=.. n_fg=..]``: composites and depth.
``python generate.py stage=depth depth=<teacher>``: label the zips already in ``out_dir``.
``python generate.py stage=measure depth=<teacher>``: time the depth stage against the model's forward.
Teachers: ``depth_anything_v2_small``, ``dpt_hybrid``, or ``hub depth.model=<hub id | folder>``.
"""

import json
import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from fgbg.build.generation import Settings, generate
from fgbg.build.label import find_zips, label_dataset, measure
from fgbg.cli import entry_point
from fgbg.errors import check_choice

log = logging.getLogger(__name__)
STAGES = ("all", "depth", "measure")


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
@entry_point
def main(cfg: DictConfig) -> None:
    check_choice("stage", cfg.stage, STAGES)
    depth = instantiate(cfg.depth) if cfg.depth else None
    if cfg.stage == "all":
        settings = Settings(
            n_bg=cfg.n_bg, n_fg=cfg.n_fg, placements=cfg.placements, seed=cfg.seed, jpeg_quality=cfg.jpeg_quality
        )
        written = generate(
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
    elif cfg.stage == "depth":
        written = label_dataset(
            cfg.out_dir, depth, cfg.batch, cfg.jpeg_quality, cfg.workers, cfg.overwrite, cfg.progress, cfg.wait_for_lock
        )
    else:  # measure
        result = measure(find_zips(cfg.out_dir, cfg.batch)[0], depth, cfg.jpeg_quality, cfg.workers)
        log.info(
            "depth stage %.2f s, model forward %.2f s on %d images: ratio %.2f (%s)",
            result["stage_s"], result["forward_s"], result["images"], result["ratio"], json.dumps(result),
        )
        return
    log.info("wrote %d zip(s) to %s", len(written), cfg.out_dir)


if __name__ == "__main__":
    main()
