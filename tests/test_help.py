"""The first steps of a new user: each --help names its own groups and options, a missing value shows the usage,
the design card's command runs on `make sample`'s data, a missing dataset leaves nothing behind, and the default
normalisation statistics are the sample scenes' own."""

import json
import logging
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, read_write

from fgbg.cli import entry_point
from fgbg.data.checks import DatasetError
from fgbg.data.locate import check_data, stats_advice
from fgbg.errors import EXIT_USER_ERROR
from fgbg.format.names import BG, FG_BG, MANIFEST
from fgbg.format.zips import batch_zips
from fgbg.run_dirs import CONFIG_FILE, discard_run_dir
from fgbg.tasks.train import train
from fgbg.tools.stats import category_stats
from tests.helpers.configs import compose_config
from tests.helpers.data import copy_zip
from tests.helpers.paths import CONF_DIR, ROOT

ENTRY_POINTS = ("train", "eval", "predict", "generate", "export", "demo")
WITH_LAUNCHERS = ("train", "generate")  # -m sweeps and zips per job: the others' help leaves hydra/launcher out
GROUP_LINE = re.compile(r"^    (?P<name>\S+) {2,}(?P<description>\S.*?) +\[(?P<options>[^\]]*)\]$")
OPTION_LINE = re.compile(r"^    (?P<key>\S+) {2,}(?P<description>\S.*)$")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run folders (``paths.root_dir``) in ``tmp_path``; wandb offline, whatever the machine's login."""
    monkeypatch.setenv("FGBG_ROOT", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture
def hydra_run():
    """Sets HydraConfig as a Hydra run does (``hydra_run(cfg)``), and unsets it afterwards."""
    yield lambda cfg: HydraConfig.instance().set_config(cfg)
    HydraConfig.instance().cfg = None


def _help(entry: str, *overrides: str) -> tuple[str, OmegaConf]:
    """``python <entry>.py --help [overrides]`` rendered as Hydra renders it (the template's interpolations, which
    need Hydra's config loader, then its ``$`` placeholders), and the composed config."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(entry, overrides=list(overrides), return_hydra_config=True)
        text = string.Template(cfg.hydra.help.template).substitute(
            FLAGS_HELP="", HYDRA_CONFIG_GROUPS="", APP_CONFIG_GROUPS="", CONFIG=""
        )
    return text, cfg


def _section(text: str, title: str) -> list[str]:
    """The lines of the ``== <title>...`` section, up to the blank line that ends it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {title}"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].strip())
    return lines[start + 1 : end]


def _own_groups(entry: str, cfg) -> set[str]:
    """The config groups the entry point composes (Hydra's record of its defaults), the launchers where it has them."""
    groups = {group for group in cfg.hydra.runtime.choices if not group.startswith("hydra/")}
    return groups | ({"hydra/launcher"} if entry in WITH_LAUNCHERS else set())


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_help_lists_its_own_groups_each_with_a_description(entry):
    text, cfg = _help(entry)
    lines = _section(text, "Config groups")
    matches = [GROUP_LINE.match(line) for line in lines]
    assert all(matches), [line for line, match in zip(lines, matches) if not match]
    named = [match["name"] for match in matches]
    assert sorted(named) == sorted(_own_groups(entry, cfg)) and len(named) == len(set(named))
    assert all(len(match["description"].split()) >= 3 for match in matches)
    options = {match["name"]: match["options"].split(", ") for match in matches}
    for group, choice in cfg.hydra.runtime.choices.items():  # the current choice is marked, where there is one
        if group in options and choice is not None:
            assert f"{choice}*" in options[group], group


def test_train_help_leaves_out_the_generation_groups_and_generate_the_training_ones():
    train_text, _ = _help("train")
    generate_text, _ = _help("generate")
    train_groups = {GROUP_LINE.match(line)["name"] for line in _section(train_text, "Config groups")}
    generate_groups = {GROUP_LINE.match(line)["name"] for line in _section(generate_text, "Config groups")}
    assert not {"depth", "source"} & train_groups and {"depth", "source"} <= generate_groups
    assert not {"model", "data", "trainer"} & generate_groups


def _has_key(cfg, key: str) -> bool:
    """Whether the dotted ``key`` is in ``cfg``, a required (``???``) one included."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return OmegaConf.is_dict(node) and leaf in node.keys()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_each_main_option_is_a_key_of_its_config_and_the_usage_has_an_example(entry):
    text, cfg = _help(entry)
    lines = _section(text, "Main options")
    keys = [OPTION_LINE.match(line)["key"] for line in lines]
    assert len(keys) >= 5 and [key for key in keys if not _has_key(cfg, key)] == []
    usage = cfg.hydra.help.header
    assert usage.startswith(f"Usage:    python {entry}.py") and f"Example:  python {entry}.py" in usage and usage in text


def test_train_help_gives_the_design_cards_command_and_this_command_lines_values():
    text, _ = _help("train", "experiment=quickstart")
    assert "Example:  python train.py model=convgen data.strategy=4k" in text
    assert re.search(r"^    model .*\[convgen, net, subtraction, unet\*\]$", text, re.M)  # quickstart's U-Net
    assert re.search(r"^    trainer\.max_epochs .*\(now: 3\)$", text, re.M)
    assert re.search(r"^    data\.grayscale .*\(now: true\)$", text, re.M)  # as YAML writes it


def test_a_missing_value_shows_the_usage_then_the_key(hydra_run, capsys, tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("predict", return_hydra_config=True)
    with read_write(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    hydra_run(cfg)
    (tmp_path / "run" / ".hydra").mkdir(parents=True)  # what Hydra writes before the task starts
    with pytest.raises(SystemExit) as stopped:
        entry_point(lambda task_cfg: task_cfg.ckpt_path)(cfg)
    assert stopped.value.code == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("Usage:    python predict.py ckpt_path=<checkpoint> bg=")
    assert lines[-1].startswith("error: ckpt_path is required")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_predict_alone_exits_2_with_the_usage_and_leaves_no_run_folder(tmp_path):
    env = {**os.environ, "FGBG_ROOT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "predict.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_USER_ERROR, done.stderr
    assert lines[0].startswith("Usage:    python predict.py") and lines[-1].startswith("error: ckpt_path is required")
    assert list((tmp_path / "outputs" / "predict").iterdir()) == []


@pytest.mark.slow
def test_train_help_as_hydra_prints_it():
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    groups = {m["name"] for m in map(GROUP_LINE.match, _section(done.stdout, "Config groups")) if m}
    assert "model" in groups and "depth" not in groups
    assert "Example:  python train.py model=convgen data.strategy=4k" in done.stdout


def _sample_small(tmp_path: Path, small_dataset: Path) -> Path:
    """``<tmp_path>/data``, holding only what `make sample` makes: ``sample_small`` (here the test session's zips)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "sample_small").symlink_to(small_dataset, target_is_directory=True)
    return data


def test_the_design_cards_command_runs_after_make_sample_alone(small_dataset, tmp_path, caplog, one_torch_thread):
    data = _sample_small(tmp_path, small_dataset)
    run = tmp_path / "run"
    cfg = compose_config("train", [
        "model=convgen", "data.strategy=4k",  # the design card's command, with a fast dev run and no logger
        f"paths.data_dir={data}", f"paths.output_dir={run}", "trainer.fast_dev_run=1", "logger=none",
        "callbacks=none", "data.num_workers=0", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    ])
    with caplog.at_level(logging.INFO, logger="fgbg.run_dirs"):
        metrics = train(cfg)
    assert f"using {data / 'sample_small'}: the first of {data / 'sample'}, {data / 'sample_small'}" in caplog.text
    assert "test/mask_iou" in metrics
    assert OmegaConf.load(run / CONFIG_FILE).data.data_dir == str(small_dataset.resolve())


def _hydras_run_folder(tmp_path: Path) -> Path:
    """A run folder as Hydra leaves it when the task starts: ``.hydra/`` and the job's log."""
    run = tmp_path / "outputs" / "train" / "2024-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / ".hydra" / name).write_text("{}\n")
    (run / "train.log").write_text("[fgbg.run_dirs][INFO] - ...\n")
    return run


def test_a_missing_dataset_stops_before_any_logger_and_leaves_no_run_folder(tmp_path):
    run = _hydras_run_folder(tmp_path)
    cfg = compose_config("train", [f"paths.output_dir={run}", "logger=wandb"])  # data/sample, data/sample_small: none
    with pytest.raises(DatasetError, match=r"has no batch1_images\.zip, batch2_images\.zip, .*`make sample` writes"):
        train(cfg)
    assert not run.exists() and list(tmp_path.rglob("wandb")) == []


def test_a_run_folder_with_the_tasks_own_files_is_kept(tmp_path):
    run = _hydras_run_folder(tmp_path)
    (run / "split.json").write_text("{}")
    assert not discard_run_dir(run) and run.is_dir()
    (run / "split.json").unlink()
    assert discard_run_dir(run) and not run.exists()
    assert not discard_run_dir(run) and not discard_run_dir(None)


@pytest.mark.slow
def test_train_without_data_exits_2_before_making_a_run_folder_or_a_wandb_run(tmp_path):
    env = {**os.environ, "FGBG_ROOT": str(tmp_path), "WANDB_MODE": "offline"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == EXIT_USER_ERROR, done.stderr
    assert "`make sample` writes data/sample_small" in done.stderr.strip().splitlines()[-1]
    assert list((tmp_path / "outputs" / "train").iterdir()) == [] and list(tmp_path.rglob("wandb")) == []


def _stats_file(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "stats" / f"{name}.yaml"))


def test_the_default_stats_are_the_sample_scenes_own_in_grey(small_dataset):
    data = compose_config("train").data
    assert data.grayscale and OmegaConf.to_container(data.stats) == _stats_file("sample")
    zips = list(batch_zips(small_dataset).values())
    measured = {gray: category_stats(zips, gray=gray) for gray in (True, False)}
    for name, gray in (("sample", True), ("sample_colour", False)):
        table = _stats_file(name)
        assert table.keys() == measured[gray].keys() and all(v.keys() == {"mean", "std"} for v in table.values())
        for category, values in table.items():  # the test session's zips: the same scenes, fewer of them
            assert values == pytest.approx(measured[gray][category], abs=0.05), (name, category)
        for category in (BG, FG_BG):  # grey and colour differ in spread: each table is nearer its own reading
            own, other = (abs(table[category]["std"] - measured[g][category]["std"]) for g in (gray, not gray))
            assert own < other, (name, category)
    assert _stats_file("document")[BG]["mean"] > measured[True][BG]["mean"] + 0.2  # the document's: another dataset


def _foreign_zip(small_dataset: Path, folder: Path, manifest: dict | None) -> Path:
    """Batch 1 of the test session's zips with ``manifest`` (None: none) in place of its own."""
    folder.mkdir()
    add = [(MANIFEST, json.dumps(manifest))] if manifest is not None else []
    copy_zip(small_dataset / "batch1_images.zip", folder / "batch1_images.zip", drop=[MANIFEST], add=add)
    return folder


def _data(data_dir, normalize=True, grayscale=True) -> dict:
    strategies = {"40k": {"batches": [1], "n_bg": None}}
    return {"data_dir": str(data_dir), "strategy": "40k", "strategies": strategies, "normalize": normalize,
            "grayscale": grayscale}


def test_normalising_other_data_with_the_sample_stats_says_how_to_measure_theirs(small_dataset, tmp_path):
    folders = _foreign_zip(small_dataset, tmp_path / "mine", {"settings": {"source": {"source": "folders"}}})
    advice = stats_advice(_data(folders), "sample")
    assert f"made from 'folders': measure theirs with `python -m fgbg.tools.stats {folders} --gray --out" in advice
    assert advice.endswith("train with data/stats=mine")
    assert "stats.py" not in advice and " --gray" not in stats_advice(_data(folders, grayscale=False), "sample_colour")
    unknown = _foreign_zip(small_dataset, tmp_path / "other", None)
    assert "made by another tool (no manifest)" in stats_advice(_data(unknown), "sample")
    assert stats_advice(_data(folders, normalize=False), "sample") is None
    assert stats_advice(_data(folders), "mine") is None and stats_advice(_data(folders), "document") is None


def test_the_sample_stats_fit_the_sample_scenes_in_their_own_colour_mode(small_dataset):
    assert stats_advice(_data(small_dataset), "sample") is None
    assert stats_advice(_data(small_dataset, grayscale=False), "sample_colour") is None
    assert stats_advice(_data(small_dataset, grayscale=False), "sample").endswith("use data/stats=sample_colour")


def test_a_run_normalising_foreign_data_logs_the_advice(small_dataset, tmp_path, hydra_run, caplog):
    folders = _foreign_zip(small_dataset, tmp_path / "mine", {"settings": {"source": {"source": "folders"}}})
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = [f"data.data_dir={folders}", "data.strategy=40k", "data.normalize=true"]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    hydra_run(cfg)
    with caplog.at_level(logging.WARNING, logger="fgbg.data.locate"):
        check_data(cfg)
    assert "data.normalize=true with the sample scenes' mean/std (data/stats=sample)" in caplog.text

