"""A web page of a checkpoint's predictions: ``python demo.py ckpt_path=...`` (see conf/demo.yaml; needs gradio)."""

import hydra
from omegaconf import DictConfig

from fgbg.cli import entry_point
from fgbg.tools.demo import demo


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
@entry_point
def main(cfg: DictConfig) -> None:
    demo(cfg.ckpt_path, cfg.examples_dir, cfg.examples, cfg.paths.output_dir, cfg.host, cfg.port)


if __name__ == "__main__":
    main()
