"""Clean exits (SIGTERM, Ctrl-C), exact resumes, run folders of their own and validated settings."""

import json
import os
import shlex
import signal
import subprocess
import sys

import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

import fgbg.run_dirs
from fgbg.errors import ConfigError
from fgbg.tasks.train import train
from tests.helpers.configs import compose_config, train_config
from tests.helpers.paths import ROOT


class SignalAt(L.Callback):
    """Test only: the process sends itself ``signum`` when training has done ``step`` steps (``times`` times)."""

    def __init__(self, step: int, signum: int = signal.SIGTERM, times: int = 1):
        self.step, self.signum, self.times = step, signum, times

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


# 2 epochs of 4 steps; the held-out test is left out (it does not change the weights).
TINY = ["model=convgen", "logger=none", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1", "test=false"]


def _signal_at(step: int, signum: int = signal.SIGTERM, times: int = 1) -> list[str]:
    target = f"{SignalAt.__module__}.{SignalAt.__name__}"
    return [f"+callbacks.signal_at._target_={target}", f"+callbacks.signal_at.step={step}",
            f"+callbacks.signal_at.signum={int(signum)}", f"+callbacks.signal_at.times={times}"]


def _weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _interrupted(data_dir, out, *overrides) -> int:
    """Run train() until its signal; its exit status."""
    with pytest.raises(SystemExit) as stop:
        train(train_config(data_dir, out, *TINY, *overrides))
    return stop.value.code


@pytest.fixture(scope="module")
def uninterrupted(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(train_config(small_dataset, out, *TINY))
    return _weights(out)


@pytest.mark.parametrize("step", [2, 6])  # in epoch 0 (the resumed run crosses an epoch end) and in epoch 1
def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_weights(small_dataset, tmp_path, uninterrupted, step):
    assert _interrupted(small_dataset, tmp_path / "a", *_signal_at(step)) == 128 + signal.SIGTERM
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == step
    summary = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert summary["interrupted"] == "SIGTERM" and summary["steps"] == step and "train/loss" in summary
    train(train_config(small_dataset, tmp_path / "b", *TINY, f"ckpt_path={last}"))
    resumed = _weights(tmp_path / "b")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_ctrl_c_saves_the_step_reached_and_exits_130(small_dataset, tmp_path):
    assert _interrupted(small_dataset, tmp_path, *_signal_at(3, signal.SIGINT)) == 128 + signal.SIGINT
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["interrupted"] == "SIGINT"


def test_second_ctrl_c_stops_at_once_without_a_checkpoint(small_dataset, tmp_path, caplog):
    # Mid-step the weights and the loop state need not agree: no checkpoint from there.
    assert _interrupted(small_dataset, tmp_path, *_signal_at(1, signal.SIGINT, times=2)) == 128 + signal.SIGINT
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["interrupted"] == "SIGINT"
    assert "no checkpoint to resume from" in caplog.text


@pytest.mark.slow
def test_sigterm_on_train_py_exits_143_and_its_resume_command_finishes_the_run(small_dataset, tmp_path, uninterrupted):
    settings = [f"data.data_dir={small_dataset}", "data.strategy=40k", "data.num_workers=0", "data.batch_size=8",
                "data.image_size=32", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false", *TINY]
    run = tmp_path / "run"
    stopped = subprocess.run([sys.executable, "train.py", *settings, *_signal_at(5), f"hydra.run.dir={run}"],
                             check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert json.loads((run / "metrics.json").read_text())["interrupted"] == "SIGTERM"
    output = stopped.stdout + stopped.stderr
    command = output.split("resume with:", 1)[1].splitlines()[0].strip()
    assert command.startswith(f"python train.py ckpt_path={run / 'checkpoints' / 'last.ckpt'} ")
    assert all(setting in shlex.split(command) for setting in settings)
    resumed = subprocess.run([sys.executable, *shlex.split(command)[1:], f"hydra.run.dir={tmp_path / 'resumed'}"],
                             check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights = _weights(tmp_path / "resumed")
    assert all(torch.equal(weights[name], uninterrupted[name]) for name in uninterrupted)


def test_run_folders_made_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fgbg.run_dirs.time, "strftime", lambda pattern: "2030-01-01_00-00-00")
    folders = []
    for _ in range(3):  # three processes' configs: each resolves hydra.run.dir once
        cfg = compose_config("train", return_hydra_config=True)
        folders.append(cfg.hydra.run.dir)
        assert cfg.hydra.run.dir == folders[-1]  # cached: a second read makes no new folder
    base = str(tmp_path / "outputs" / "train" / "2030-01-01_00-00-00")  # paths.log_dir is absolute
    assert folders == [base, f"{base}-2", f"{base}-3"]
    assert sorted(p.name for p in (tmp_path / "outputs" / "train").iterdir()) == [
        "2030-01-01_00-00-00", "2030-01-01_00-00-00-2", "2030-01-01_00-00-00-3"]


def _config_error(data_dir, *overrides) -> str:
    """The message of the ConfigError that building the data module raises."""
    cfg = compose_config("train", overrides=[f"data.data_dir={data_dir}", *overrides])
    with pytest.raises(InstantiationException) as error:
        instantiate(cfg.data)
    assert isinstance(error.value.__cause__, ConfigError)
    return str(error.value.__cause__)


@pytest.mark.parametrize(("override", "message"), [
    ("data.batch_size=0", "data.batch_size=0: expected a whole number >= 1"),
    ("data.batch_size=abc", "data.batch_size='abc': expected a whole number >= 1"),
    ("data.num_workers=-1", "data.num_workers=-1: expected a whole number >= 0"),
    ("data.on_bad_sample=ignore", "data.on_bad_sample='ignore': expected one of raise, skip"),
    ("data.split.val_bg=1.0", "data.split.val_bg=1.0: expected a fraction in [0, 1)"),
    ("data.split.test_fg=-0.1", "data.split.test_fg=-0.1: expected a fraction in [0, 1)"),
    ("data.split.test_bg=0.8", "data.split.val_bg=0.2 + data.split.test_bg=0.8 = 1: expected below 1"),
    ("data.split.min_fg_to_split=-1", "data.split.min_fg_to_split=-1: expected a whole number >= 0"),
])
def test_bad_data_settings_are_refused_by_key(tmp_path, override, message):
    # tmp_path holds no zips: the settings are checked before any is looked for.
    assert _config_error(tmp_path, override).startswith(message)


@pytest.mark.parametrize("seed", ["abc", "-1", "4294967296"])
def test_bad_seed_is_refused_before_anything_is_built(tmp_path, seed):
    cfg = train_config(tmp_path / "no such folder", tmp_path, f"seed={seed}")
    with pytest.raises(ConfigError, match=r"^seed=.*: expected a whole number 0\.\.4294967295$"):
        train(cfg)
