"""Build the batch zips: ``python generate.py [source=sample|folders] [depth=scene|none] [n_bg=.. n_fg=..]``."""

import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from fgbg.generation import Settings, generate

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    settings = Settings(
        n_bg=cfg.n_bg, n_fg=cfg.n_fg, placements=cfg.placements, seed=cfg.seed, jpeg_quality=cfg.jpeg_quality
    )
    written = generate(
        source=instantiate(cfg.source),
        depth=instantiate(cfg.depth) if cfg.depth else None,
        out_dir=cfg.out_dir,
        settings=settings,
        batch=cfg.batch,
        workers=cfg.workers,
        overwrite=cfg.overwrite,
        show_progress=cfg.progress,
    )
    log.info("wrote %d zip(s) to %s", len(written), cfg.out_dir)


if __name__ == "__main__":
    main()
