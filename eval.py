"""Test a checkpoint on the held-out split: ``python eval.py ckpt_path=... data.strategy=4k`` (see conf/eval.yaml)."""

import hydra
from omegaconf import DictConfig

from fgbg.cli import entry_point
from fgbg.tasks.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@entry_point
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
