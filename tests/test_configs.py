"""Every option of every config group composes, its components build, and YAML and code state each default once."""

import functools
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

import fgbg.run_dirs  # noqa: F401  (registers ${fgbg.cwd:} and ${fgbg.run_dir:...}, as the entry points do)
from tests.helpers.configs import compose_config
from tests.helpers.paths import CONF_DIR

ENTRY_POINTS = ("train", "eval", "generate", "predict", "export", "demo")


def _group_defaults(config: Path) -> Iterator[str]:
    """The config groups a YAML file's defaults list chooses from (``data``, ``hydra/launcher`` ...), not overrides."""
    for entry in (yaml.safe_load(config.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            (group,) = entry
            if not group.startswith("override "):
                yield group


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def _groups(config: Path, parent: str = "") -> Iterator[str]:
    """The groups of ``config`` and, below them, the groups their options' defaults lists choose from."""
    for group in _group_defaults(config):
        group = f"{parent}/{group}" if parent else group
        yield group
        for option in _options(group):
            yield from _groups(CONF_DIR / group / f"{option}.yaml", group)


def _every_option() -> list[tuple[str, str]]:
    """``(entry point, "<group>=<option>")`` for each option of each group an entry point composes, and its
    launchers (``hydra/launcher``, Hydra's own group)."""
    cases = {
        (name, f"{group}={option}")
        for name in ENTRY_POINTS
        for group in [*_groups(CONF_DIR / f"{name}.yaml"), "hydra/launcher"]
        for option in _options(group)
    }
    return sorted(cases)


OPTIONS = _every_option()


def _compose(name: str, override: str, out: Path):
    return compose_config(name, [override, f"paths.output_dir={out}"], return_hydra_config=True)


def _targets(node, path: str = "") -> Iterator[tuple[str, dict]]:
    """``(dotted path, item)`` for each ``_target_`` item in a resolved config, nested ones included."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for key, value in node.items():
            yield from _targets(value, f"{path}.{key}".lstrip("."))


def _items(cfg) -> list[tuple[str, dict]]:
    """The config's ``_target_`` items, resolved, and those of the Hydra callbacks it adds (``experiment=compare``)."""
    task = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=True)
    callbacks = OmegaConf.to_container(cfg.hydra.callbacks, resolve=True)
    return [*_targets(task), *_targets(callbacks, "hydra.callbacks")]


def _missing(item) -> bool:
    if isinstance(item, dict):
        return any(_missing(value) for value in item.values())
    return item == "???"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run folders (``paths.root_dir``) in ``tmp_path``; wandb never starts a run."""
    monkeypatch.setenv("FGBG_ROOT", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_every_group_of_every_entry_point_is_covered():
    groups = {case.split("=")[0] for _, case in OPTIONS}
    assert {"paths", "hydra", "data", "data/stats", "model", "loss", "optimizer", "scheduler", "trainer", "logger",
            "callbacks", "experiment", "source", "depth", "hydra/launcher"} <= groups
    assert ("train", "model=unet") in OPTIONS and ("generate", "depth=dpt_hybrid") in OPTIONS


def _build(item: dict):
    built = instantiate(item)
    if isinstance(built, functools.partial):  # an optimiser or a scheduler, waiting for the parameters or optimiser
        parameters = [torch.zeros(1, requires_grad=True)]
        built = built(torch.optim.SGD(parameters, lr=0.1) if "lr_scheduler" in item["_target_"] else parameters)
    return built


@pytest.mark.parametrize(("name", "override"), OPTIONS)
def test_each_option_composes_and_its_components_build(name, override, tmp_path):
    cfg = _compose(name, override, tmp_path / "run")
    run_dir = Path(cfg.hydra.run.dir)
    # conf/hydra/default.yaml: folders named after the task (debug= presets set their own, as the template's do)
    assert run_dir.parent == tmp_path / "outputs" / cfg.task_name and run_dir.is_dir()
    assert Path(cfg.hydra.sweep.dir).parent == tmp_path / "multirun" / cfg.task_name and cfg.hydra.job.chdir is False
    if "paths" in cfg:
        assert cfg.paths.root_dir == str(tmp_path) and cfg.paths.data_dir == str(tmp_path / "data")
    for path, item in _items(cfg):
        if _missing(item) or (item.get("accelerator") == "gpu" and not torch.cuda.is_available()):
            continue  # needs a value only a user can give (a folder, a model), or a GPU this machine lacks
        built = _build(item)
        assert built is not None, path


def _normal(value):
    """Tuples as lists, so that ``(32, 64)`` in code equals ``[32, 64]`` in YAML."""
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {key: _normal(v) for key, v in value.items()}
    return value


def _disagreements(item: dict) -> list[str]:
    """``key: code <default> != YAML <value>`` for each key of ``item`` whose callable also has a default."""
    parameters = inspect.signature(get_method(item["_target_"])).parameters
    return [
        f"{item['_target_']}.{key}: code {parameters[key].default!r} != YAML {value!r}"
        for key, value in item.items()
        if key in parameters and parameters[key].default is not inspect.Parameter.empty and value != "???"
        and _normal(parameters[key].default) != _normal(value)
    ]


def test_code_defaults_equal_the_yaml_that_also_sets_them(tmp_path):
    # The project's own callables only: YAML configures Lightning and torch on purpose.
    items = [item for name, override in OPTIONS for _, item in _items(_compose(name, override, tmp_path / "run"))]
    disagree = {line for item in items if item["_target_"].startswith("fgbg.") for line in _disagreements(item)}
    assert not disagree, "\n".join(sorted(disagree))
