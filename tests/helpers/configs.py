"""Configs composed as the entry points compose them (Hydra's compose API, in-process)."""

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from tests.helpers.paths import CONF_DIR


def compose_config(config_name: str | None = None, overrides=(), return_hydra_config: bool = False) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, like ``python <entry point> <overrides>``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def train_config(data_dir, out_dir, *overrides) -> DictConfig:
    """A small, fast train.py config on CPU over the zips in ``data_dir``, writing to ``out_dir``."""
    base = [
        f"data.data_dir={data_dir}",
        "data.strategy=40k",
        "data.num_workers=0",
        "data.batch_size=8",
        "data.image_size=32",
        f"paths.output_dir={out_dir}",
        "logger=csv",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    return compose_config("train", [*base, *overrides])


def module_config(model: str = "convgen", optimizer: str = "adam", scheduler: str = "step") -> DictConfig:
    """The module's groups as train.py composes them (without the rest of conf/train.yaml)."""
    return compose_config(overrides=[f"+model={model}", "+loss=document", f"+optimizer={optimizer}", f"+scheduler={scheduler}"])


def datamodule(data_dir, *overrides):
    """train.py's data module over ``data_dir`` (strategy 40k, no workers), set up."""
    cfg = compose_config("train", [f"data.data_dir={data_dir}", "data.strategy=40k", "data.num_workers=0", *overrides])
    dm = instantiate(cfg.data)
    dm.setup()
    return dm
