"""Nothing lost: killed or failing generation leaves only complete zips, and a rerun ends with the same bytes."""

import errno
import random
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from fgbg.build.batch_zip import Settings
from fgbg.format import manifest, writer, zips
from tests.helpers.data import SMALL, make_dataset
from tests.helpers.paths import ROOT

# Three zips of 8,000 composites each: long enough (seconds) for kills to land inside a zip.
KILLED = Settings(n_bg=100, n_fg=30, placements=4, seed=5, jpeg_quality=SMALL.jpeg_quality)


def _generate_command(out):
    s = KILLED
    return [
        sys.executable, "generate.py", f"n_bg={s.n_bg}", f"n_fg={s.n_fg}", f"placements={s.placements}",
        f"seed={s.seed}", f"jpeg_quality={s.jpeg_quality}", f"out_dir={out}", "workers=1", "progress=false",
        f"hydra.run.dir={out.parent / 'hydra'}",
    ]


def _assert_only_complete_zips(out):
    for path in out.glob("batch*_images.zip"):
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
        assert manifest.read_manifest(path)["counts"]["fg_bg_jpg"] == 10 * 2 * KILLED.n_bg * KILLED.placements


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_gives_identical_bytes(tmp_path):
    out = tmp_path / "killed"
    rng, killed_mid_zip = random.Random(0), 0
    for _ in range(3):
        process = subprocess.Popen(_generate_command(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 5.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_mid_zip += bool(list(out.glob("*.partial-*")))
        _assert_only_complete_zips(out)
    assert killed_mid_zip  # at least one kill hit a zip being written
    subprocess.run(_generate_command(out), cwd=ROOT, check=True, capture_output=True, timeout=300)
    reference = make_dataset(tmp_path / "reference", KILLED, workers=2)
    assert sorted(p.name for p in out.glob("*.zip")) == sorted(p.name for p in reference)
    assert not list(out.glob("*.partial*")) and not list(out.glob(".*.lock"))  # leftovers removed, locks let go
    for path in reference:
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name


def test_full_disk_gives_a_clear_error_and_no_partial_zip(tmp_path, monkeypatch):
    real, calls = writer.BatchWriter.write_bytes, {"n": 0}

    def fills_up(self, member, data):
        calls["n"] += 1
        if calls["n"] > 100:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, member, data)

    monkeypatch.setattr(writer.BatchWriter, "write_bytes", fills_up)
    with pytest.raises(zips.ArchiveError, match="batch1_images.zip: cannot write .No space left on device"):
        make_dataset(tmp_path, workers=1, batch=1)
    assert list(tmp_path.iterdir()) == []


def test_read_only_output_folder_gives_a_clear_error(tmp_path, monkeypatch):
    # Simulated: the tests may run as root, which ignores folder permissions.
    def read_only(path, mode="r", *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(writer, "open", read_only, raising=False)
    with pytest.raises(zips.ArchiveError, match="batch1_images.zip: cannot write .Permission denied"):
        make_dataset(tmp_path, workers=1, batch=1)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(zips.ArchiveError, match="cannot create the output folder"):
        make_dataset(tmp_path / "file" / "out", workers=1)
