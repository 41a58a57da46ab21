"""Build and label the batch zips (the body is :func:`fgbg.tasks.generate.generate_task`).

``python generate.py [source=sample|folders] [depth=scene|none|<teacher>] [n_bg=.. n_fg=..]``: composites and depth.
``python generate.py stage=depth depth=<teacher>``: label the zips already in ``out_dir``.
``python generate.py stage=measure depth=<teacher>``: time the depth stage against the model's forward.
Teachers: ``depth_anything_v2_small``, ``dpt_hybrid``, or ``hub depth.model=<hub id | folder>``.
"""

import hydra
from omegaconf import DictConfig

from fgbg.cli import entry_point
from fgbg.tasks.generate import generate_task


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
@entry_point
def main(cfg: DictConfig) -> None:
    generate_task(cfg)


if __name__ == "__main__":
    main()
