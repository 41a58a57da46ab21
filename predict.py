"""Predict masks and depths: ``python predict.py ckpt_path=... bg=bg.jpg inputs=composites/ out=predictions``."""

import hydra
from omegaconf import DictConfig

from fgbg.cli import entry_point
from fgbg.tasks.predict import predict


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@entry_point
def main(cfg: DictConfig) -> None:
    predict(cfg.ckpt_path, cfg.bg, cfg.inputs, cfg.out, device=cfg.device, batch_size=cfg.batch_size)


if __name__ == "__main__":
    main()
