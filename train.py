"""Train a model: ``python train.py model=convgen data.strategy=4k`` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from fgbg.cli import entry_point
from fgbg.errors import ConfigError
from fgbg.tasks.train import train


def optimized(metrics: dict[str, float], name: str | None) -> float | None:
    """``metrics[name]``, what a Hydra sweeper (Optuna) optimises; None when ``name`` is None."""
    if name is None:
        return None
    if name not in metrics:
        known = ", ".join(sorted(k for k in metrics if k.startswith("val/")))
        raise ConfigError(f"optimized_metric={name!r} was not logged; logged: {known}")
    return metrics[name]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@entry_point
def main(cfg: DictConfig) -> float | None:
    return optimized(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
