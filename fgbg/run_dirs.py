"""The run folder: where it is made, what it holds, and how a later command reads it back from a checkpoint path.

A run folder (conf/hydra/default.yaml) holds ``.hydra/config.yaml`` (the config it ran with), ``split.json``,
``metrics.json`` and ``checkpoints/``: ``eval.py`` and a resumed ``train.py`` need only
``ckpt_path=<run>/checkpoints/<name>.ckpt`` and take the rest from there.

Hydra's ``${now:%Y-%m-%d_%H-%M-%S}`` alone gives two runs started in the same second one folder, and the
second overwrites the first's files. The resolver ``${fgbg.run_dir:<base>}`` creates ``<base>/<time>`` with a
plain ``mkdir`` (which only one process can win) and, when that name is taken, ``<time>-2``, ``<time>-3``, ...
It is cached (``use_cache``): one config resolves it once, and Hydra copies that cache into every job of a
sweep, so the jobs share their sweep folder. ``${fgbg.cwd:}`` is the working directory (``paths.root_dir``).

Hydra makes the run folder, and writes ``.hydra/`` and the job's log there, before the task starts: a run stopped
by an error found before it wrote anything removes it (:func:`discard_run_dir`), so that no empty run is left.

More resolvers serve the configs: ``${fgbg.first_existing:<a>,<b>,...}`` (the default ``data.data_dir``:
the full sample dataset when ``make generate`` made it, else ``make sample``'s); ``${fgbg.options:<group>}`` and
``${fgbg.now:<key>}`` (a group's options, a key's value) write the ``--help`` texts of ``conf/hydra/help/``.

Importing this module registers the resolvers (the entry points import it through :mod:`fgbg.cli`, before
Hydra composes).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from fgbg import hardware  # noqa: F401  (registers ${fgbg.precision:...}, trainer.precision's default)
from fgbg.upgrade import upgraded_run_config

log = logging.getLogger(__name__)

RESOLVER = "fgbg.run_dir"
# The folder name's time stamp, as Hydra's own run folders had it.
STAMP = "%Y-%m-%d_%H-%M-%S"
# A run folder's files, relative to it. Hydra writes the config (hydra.output_subdir, left at its default).
CONFIG_FILE = Path(".hydra") / "config.yaml"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.json"


class Summary(StrEnum):
    """The keys of a training run's ``metrics.json`` beside its logged metrics (``train/loss``, ``test/...``)."""

    MODEL = "model"  # the model's class name
    PARAMETERS = "parameters"
    FIT_SECONDS = "fit_seconds"
    STEPS = "steps"
    EPOCHS = "epochs"
    TAGS = "tags"  # the run's ``tags`` (conf/train.yaml), as wandb gets them
    TEST_PARTS = "held_out"  # what the test split holds: fgbg.data.index.held_out_parts
    INTERRUPTED = "interrupted"  # the signal's name, only in a run stopped by one


def new_run_dir(base: str | Path) -> str:
    """Create and return a folder ``<base>/<time>`` that did not exist, suffixed ``-2``, ``-3``, ... if needed."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime(STAMP)
    folder, n = base / stamp, 1
    while True:
        try:
            folder.mkdir()
            return str(folder)
        except FileExistsError:
            n += 1
            folder = base / f"{stamp}-{n}"


def discard_run_dir(folder: str | Path | None) -> bool:
    """Remove ``folder`` if it holds only what Hydra writes before the task starts (``.hydra/``, the job's
    ``.log``); whether it did. For a run stopped before it did anything: a folder with any file of the task's
    own (a config, a checkpoint) is kept."""
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        return False
    for entry in folder.iterdir():
        hydra_files = entry.name == ".hydra" and entry.is_dir() and all(f.suffix == ".yaml" for f in entry.iterdir())
        if not (hydra_files or (entry.suffix == ".log" and entry.is_file())):
            return False
    shutil.rmtree(folder)
    return True


def this_run_dir() -> str | None:
    """This Hydra job's run folder (``hydra.runtime.output_dir``); None outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None, throw_on_missing=False)


def first_existing(*folders: str) -> str:
    """The first of ``folders`` that exists, logged (the choice is made for the user), else the first, whose
    absence a later check reports."""
    chosen = next((folder for folder in folders if Path(folder).is_dir()), None)
    if chosen is None:
        return folders[0]
    log.info("using %s: the first of %s that exists", chosen, ", ".join(folders))
    return chosen


def group_options(group: str, _root_=None) -> str:
    """``a, b*, c``: the options of config ``group`` (Hydra's search path: ``conf/<group>/`` and Hydra's own),
    ``*`` marking this config's choice (``hydra.runtime.choices``); for the help texts, composed under Hydra."""
    from hydra.core.global_hydra import GlobalHydra

    options = GlobalHydra.instance().config_loader().get_group_options(group)
    choices = OmegaConf.select(_root_, "hydra.runtime.choices", default=None) if _root_ is not None else None
    chosen = choices.get(group) if choices is not None else None
    return ", ".join(f"{option}*" if option == chosen else option for option in options)


def current_value(key: str, _root_=None) -> str:
    """The value of ``key`` in this config as YAML writes it (``true``, ``null``, ``4k``), for the help texts;
    ``KeyError`` for a key the config lacks, so that a help text cannot name one."""
    missing = object()
    value = OmegaConf.select(_root_, key, default=missing)
    if value is missing:
        raise KeyError(f"{key}: not a key of this config")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]  # [<value>] on one line


def run_of(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint ``<run>/checkpoints/<name>.ckpt``."""
    return Path(ckpt_path).resolve().parent.parent


def command_line_overrides() -> list[str]:
    """This process's command-line overrides, as Hydra recorded them (``.hydra/overrides.yaml``); none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def with_run_config(cfg: DictConfig, ckpt_path: str | Path, keys: Sequence[str] | None, overrides: Sequence[str]):
    """``cfg`` with its top-level ``keys`` (None: all the saved config's but ``paths`` and ``ckpt_path``) taken
    from the checkpoint's run's saved config, then ``overrides``' keys set back to ``cfg``'s values: what the
    command line gives wins. Without a saved config, ``cfg`` itself, with a warning.
    """
    saved_path = run_of(ckpt_path) / CONFIG_FILE
    if not saved_path.exists():
        log.warning("no %s: using this command's config alone, not the run's", saved_path)
        return cfg
    saved = OmegaConf.create(upgraded_run_config(OmegaConf.to_container(OmegaConf.load(saved_path))))
    keys = [key for key in saved if key not in ("paths", "ckpt_path")] if keys is None else keys
    merged = copy.deepcopy(cfg)
    with open_dict(merged):
        for key in keys:
            merged[key] = saved.get(key)
        for override in overrides:
            _set_like(merged, cfg, override_key(override))
    log.info("config: %s of %s; given here: %s", ", ".join(keys), saved_path, ", ".join(overrides) or "nothing")
    return merged


def save_config(cfg: DictConfig, run_dir: str | Path) -> Path:
    """Write ``cfg`` as the run folder's config (in place of Hydra's, when it ran with another)."""
    path = Path(run_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
    return path


def override_key(override: str) -> str:
    """``data.image_size`` of ``data.image_size=24``, ``+data.x=1``, ``~data.x`` or ``++data.x=1``; ``data.stats``
    of the group override ``data/stats=mine``."""
    return override.lstrip("+~").split("=", 1)[0].replace("/", ".")


def _set_like(target: DictConfig, source: DictConfig, key: str) -> None:
    """Set ``target``'s dotted ``key`` to ``source``'s value there, or remove it where ``source`` has none."""
    missing = object()
    value = OmegaConf.select(source, key, default=missing, throw_on_resolution_failure=False)
    if value is not missing:
        OmegaConf.update(target, key, value, merge=False, force_add=True)
        return
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(target, parent_key) if parent_key else target
    if isinstance(parent, DictConfig) and leaf in parent:
        del parent[leaf]


if not OmegaConf.has_resolver(RESOLVER):
    OmegaConf.register_new_resolver(RESOLVER, new_run_dir, use_cache=True)
if not OmegaConf.has_resolver("fgbg.cwd"):
    OmegaConf.register_new_resolver("fgbg.cwd", os.getcwd)
if not OmegaConf.has_resolver("fgbg.first_existing"):
    # Cached: one config resolves (and logs) its choice once.
    OmegaConf.register_new_resolver("fgbg.first_existing", first_existing, use_cache=True)
if not OmegaConf.has_resolver("fgbg.options"):
    OmegaConf.register_new_resolver("fgbg.options", group_options)
if not OmegaConf.has_resolver("fgbg.now"):
    OmegaConf.register_new_resolver("fgbg.now", current_value)
