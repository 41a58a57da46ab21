"""Train a model: ``python train.py model=convgen data.strategy=4k`` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from fgbg.cli import entry_point
from fgbg.tasks.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@entry_point
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # Returned so that Hydra sweepers (e.g. Optuna) can optimise it.
    return metrics.get("val/loss")


if __name__ == "__main__":
    main()
