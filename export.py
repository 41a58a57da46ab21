"""Export a checkpoint: ``python export.py ckpt_path=... format=onnx|torchscript`` (see conf/export.yaml)."""

import hydra
from omegaconf import DictConfig

from fgbg.cli import entry_point
from fgbg.tasks.export import export


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@entry_point
def main(cfg: DictConfig) -> None:
    export(cfg.ckpt_path, cfg.format, cfg.out, cfg.name)


if __name__ == "__main__":
    main()
