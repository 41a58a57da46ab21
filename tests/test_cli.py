"""Entry points: the project's errors as one line on stderr with exit status 2; other errors keep their traceback."""

import subprocess
import sys

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from fgbg.build.sources import SourceError
from fgbg.cli import entry_point
from fgbg.errors import EXIT_USER_ERROR, ConfigError, FgbgError, check_choice, check_fraction, check_int
from tests.helpers.paths import ROOT


def _raises(error):
    @entry_point
    def task(cfg):
        raise error

    return task


def test_a_project_error_is_one_line_on_stderr_and_exit_2(capsys):
    with pytest.raises(SystemExit) as stopped:
        _raises(SourceError("bgs/a.png: cannot read image"))(OmegaConf.create({}))
    assert stopped.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: bgs/a.png: cannot read image\n"


def test_an_error_raised_inside_instantiate_is_reported_as_itself(capsys):
    wrapped = InstantiationException("Error in call to target 'fgbg.build.sources.ImageFolders':\nSourceError(...)")
    wrapped.__cause__ = SourceError("bgs: does not exist")
    with pytest.raises(SystemExit):
        _raises(wrapped)(OmegaConf.create({}))
    assert capsys.readouterr().err == "error: bgs: does not exist\n"


def test_a_missing_mandatory_value_names_the_key(capsys):
    @entry_point
    def task(cfg):
        return cfg.ckpt_path

    with pytest.raises(SystemExit) as stopped:
        task(OmegaConf.create({"ckpt_path": "???"}))
    assert stopped.value.code == EXIT_USER_ERROR
    assert "error: ckpt_path is required" in capsys.readouterr().err


def test_other_errors_and_hydra_full_error_keep_the_traceback(monkeypatch):
    with pytest.raises(ZeroDivisionError):
        _raises(ZeroDivisionError("a bug"))(OmegaConf.create({}))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SourceError):
        _raises(SourceError("shown with its traceback"))(OmegaConf.create({}))


@pytest.mark.parametrize(
    ("check", "args", "message"),
    [
        (check_int, ("seed", "abc", 0, 10), "seed='abc': expected a whole number 0..10"),
        (check_int, ("n_bg", 0, 1), "n_bg=0: expected a whole number >= 1"),
        (check_int, ("workers", True, 1), "workers=True: expected a whole number >= 1"),
        (check_fraction, ("data.split.val_bg", 1.5), r"data.split.val_bg=1.5: expected a fraction in \[0, 1\)"),
        (check_choice, ("stage", "x", ("all", "depth")), "stage='x': expected one of all, depth"),
    ],
)
def test_config_checks_name_the_key_and_the_allowed_values(check, args, message):
    with pytest.raises(ConfigError, match=message):
        check(*args)
    assert issubclass(ConfigError, FgbgError)


def test_config_checks_pass_good_values_through():
    assert check_int("n_bg", 3, 1) == 3
    assert check_fraction("data.split.val_bg", 0) == 0.0
    assert check_choice("stage", "all", ("all", "depth")) == "all"


def _stderr_of_failed_run(script, *args, cwd=ROOT) -> list[str]:
    done = subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == EXIT_USER_ERROR, done.stderr
    return done.stderr.strip().splitlines()


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("predict.py", [], "error: ckpt_path is required"),
        ("generate.py", ["stage=bogus"], "error: stage='bogus': expected one of all, depth, measure"),
    ],
)
def test_entry_points_print_at_most_three_lines(script, args, expected, tmp_path):
    lines = _stderr_of_failed_run(script, *args, f"hydra.run.dir={tmp_path}")
    assert len(lines) <= 3 and expected in lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("train.py", ["data.batch_size=0"], "error: data.batch_size=0: expected a whole number >= 1"),
        ("train.py", ["data.image_size=0"], "error: data.image_size=0: expected a whole number 8..160"),
        ("train.py", ["seed=abc"], "error: seed='abc': expected a whole number 0..4294967295"),
        ("eval.py", ["ckpt_path={empty}"], "error: {empty}: not a checkpoint of train.py"),
    ],
)
def test_bad_training_settings_and_files_print_at_most_three_lines(script, args, expected, tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    args = [arg.format(empty=empty) for arg in args]
    lines = _stderr_of_failed_run(script, *args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert len(lines) <= 3 and lines[-1].startswith(expected.format(empty=empty)), lines
