"""One writer per zip: locks, unique partials, verified resumes, folder runs that resume, workers that die with
their run."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgbg.build.batch_zip import Settings
from fgbg.build.generation import generate
from fgbg.build.sources import ImageFolders, SampleScenes
from fgbg.errors import EXIT_USER_ERROR
from fgbg.format import locks, manifest, writer, zips
from tests.helpers.configs import datamodule
from tests.helpers.data import SMALL, flip_a_byte_inside, make_dataset
from tests.helpers.paths import ROOT

# Two zips (fg 1-10, fg 11-12) of a few dozen composites each.
TINY = Settings(n_bg=3, n_fg=12, placements=2, seed=3, jpeg_quality=SMALL.jpeg_quality)
ZIPS = ["batch1_images.zip", "batch2_images.zip"]

# generate.py's main, held once it has its locks and knows what to write: it creates <gate>.locked, then
# waits for <gate>.go. argv: the gate's path, then generate.py's overrides.
GATED_GENERATE = """
import runpy, sys, time
from pathlib import Path
import fgbg.build.generation as generation
gate = Path(sys.argv.pop(1))
decide = generation._pending
def decide_then_wait(*args, **kwargs):
    todo = decide(*args, **kwargs)
    gate.with_suffix(".locked").touch()
    while not gate.with_suffix(".go").exists():
        time.sleep(0.05)
    return todo
generation._pending = decide_then_wait
sys.argv[0] = "generate.py"
runpy.run_path("generate.py", run_name="__main__")
"""

# A cache build with two loader workers that never finish a chunk. argv: the data folder.
STUCK_CACHE_BUILD = """
import sys, time
from fgbg.data import cache
cache._Chunks.__getitem__ = lambda self, chunk: time.sleep(600)
from tests.helpers.configs import datamodule
datamodule(sys.argv[1], "data.cache=true", "data.num_workers=2")
"""


def _overrides(out: Path, hydra_dir: Path, settings: Settings = TINY) -> list[str]:
    s = settings
    return [
        f"n_bg={s.n_bg}", f"n_fg={s.n_fg}", f"placements={s.placements}", f"seed={s.seed}",
        f"jpeg_quality={s.jpeg_quality}", f"out_dir={out}", "progress=false", f"hydra.run.dir={hydra_dir}",
    ]


def _wait_until(condition, process: subprocess.Popen, what: str) -> None:
    """Poll ``condition`` while ``process`` runs (a helper for ordering, not a timing assertion)."""
    while not condition():
        assert process.poll() is None, f"the process ended (status {process.returncode}) before {what}"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while listed
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; whether it is reaped depends on the container's init


def _assert_workers_die_with(process: subprocess.Popen, n_workers: int) -> None:
    """SIGKILL ``process`` once it has ``n_workers`` children; they must be gone within a few seconds."""
    _wait_until(lambda: len(_children(process.pid)) >= n_workers, process, "its workers started")
    workers = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # left running, they would finish their task and then wait for work forever
        os.kill(pid, signal.SIGKILL)
    assert not survivors


def _folder_source(root: Path, settings: Settings) -> ImageFolders:
    """``n_bg`` RGB backgrounds and ``n_fg`` RGBA foregrounds (an opaque disc each) as PNG files."""
    rng = np.random.default_rng(0)
    (root / "bgs").mkdir()
    (root / "fgs").mkdir()
    for i in range(1, settings.n_bg + 1):
        Image.fromarray(rng.integers(0, 256, (160, 160, 3), np.uint8)).save(root / "bgs" / f"room{i}.png")
    yy, xx = np.mgrid[:80, :80]
    for i in range(1, settings.n_fg + 1):
        rgba = rng.integers(0, 256, (80, 80, 4), np.uint8)
        rgba[..., 3] = np.where((yy - 40) ** 2 + (xx - 40) ** 2 < (10 + 2 * i) ** 2, 255, 0)
        Image.fromarray(rgba, "RGBA").save(root / "fgs" / f"thing{i}.png")
    return ImageFolders(str(root / "bgs"), str(root / "fgs"))


@pytest.mark.parametrize("source", ["sample", "folders"])
def test_a_finished_run_is_skipped_and_an_interrupted_one_resumes(tmp_path, source):
    # The manifest gives records back through JSON (a folder source's int ids as strings): they must still match.
    scenes = SampleScenes(TINY.seed) if source == "sample" else _folder_source(tmp_path, TINY)
    out = tmp_path / "out"

    def run(**kwargs) -> list[Path]:
        return generate(scenes, None, out, TINY, workers=1, show_progress=False, **kwargs)

    assert run(batch=1) == [out / ZIPS[0]]  # a run stopped after its first zip
    assert run() == [out / ZIPS[1]]
    assert run() == []
    assert manifest.read_manifest(out / ZIPS[0])["settings"]["source"]["source"] == source


def test_a_zip_being_written_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with locks.sole_writer(out / ZIPS[0]):
        with pytest.raises(zips.ArchiveError) as refused:
            make_dataset(out, TINY, workers=1)
        message = str(refused.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}, started " in message
        assert f"lock file {out / ('.' + ZIPS[0] + '.lock')}" in message and "wait_for_lock=true" in message
        assert "\n" not in message
        assert list(out.iterdir()) == [out / f".{ZIPS[0]}.lock"]  # nothing written
        # A job writing another zip of the folder (a launcher's batch=2) is not held up.
        assert make_dataset(out, TINY, workers=1, batch=2) == [out / ZIPS[1]]
    assert make_dataset(out, TINY, workers=1) == [out / ZIPS[0]]
    assert sorted(p.name for p in out.iterdir()) == ZIPS  # lock files go with their holders


def test_each_writer_has_its_own_partial_and_leftovers_of_killed_writers_go(tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [out / f"{ZIPS[0]}.partial", out / f"{ZIPS[0]}.partial-4000000", out / f"{ZIPS[1]}.partial-4000001"]
    for path in leftovers:
        path.write_bytes(b"PK half a zip")
    seen = []
    real = writer.BatchWriter.write_manifest

    def look(self, manifest):
        seen.append(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
        return real(self, manifest)

    monkeypatch.setattr(writer.BatchWriter, "write_manifest", look)
    with caplog.at_level(logging.INFO, logger="fgbg.format.locks"):
        make_dataset(out, TINY, workers=1)
    assert seen == [[f"{ZIPS[0]}.partial-{os.getpid()}"], [ZIPS[0], f"{ZIPS[1]}.partial-{os.getpid()}"]]
    assert sorted(p.name for p in out.iterdir()) == ZIPS
    assert all(f"removing {path}, left by a run that was killed" in caplog.text for path in leftovers)


def test_a_damaged_finished_zip_is_written_again(tmp_path, caplog):
    out = tmp_path / "out"
    make_dataset(out, TINY, workers=1)
    intact = (out / ZIPS[0]).read_bytes()
    member = "fg_bg_jpg/fg_bg_4_2_1_2.jpg"
    flip_a_byte_inside(out / ZIPS[0], member)
    with zipfile.ZipFile(out / ZIPS[0]) as zf:
        assert zf.testzip() == member and manifest.damaged_member(zf) == member
    with caplog.at_level(logging.WARNING, logger="fgbg.build.generation"):
        assert make_dataset(out, TINY, workers=1) == [out / ZIPS[0]]
    assert f"{out / ZIPS[0]}: member {member} is damaged" in caplog.text
    assert (out / ZIPS[0]).read_bytes() == intact


def test_damage_check_agrees_with_testzip(tmp_path):
    # Stored members (ours) are checked from a memory map, others through zipfile: both as testzip sees them.
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("stored.jpg", bytes(range(256)) * 8, compress_type=zipfile.ZIP_STORED)
        zf.writestr("deflated.txt", b"grey levels " * 100, compress_type=zipfile.ZIP_DEFLATED)
    for member in (None, "deflated.txt", "stored.jpg"):
        if member:
            flip_a_byte_inside(path, member)
        with zipfile.ZipFile(path) as zf:
            assert manifest.damaged_member(zf) == zf.testzip() == member


def test_an_unreadable_finished_zip_stops_the_run_by_name(tmp_path):
    out = tmp_path / "out"
    make_dataset(out, TINY, workers=1, batch=2)
    (out / ZIPS[1]).write_bytes((out / ZIPS[1]).read_bytes()[:-100])  # cut through the central directory
    with pytest.raises(zips.ArchiveError, match=f"{ZIPS[1]}: not a complete batch zip .*delete it or pass overwrite=true"):
        make_dataset(out, TINY, workers=1)


@pytest.mark.slow
def test_a_second_run_is_refused_or_waits_and_then_skips(tmp_path):
    out, gate = tmp_path / "out", tmp_path / "gate"
    first = subprocess.Popen(
        [sys.executable, "-c", GATED_GENERATE, str(gate), *_overrides(out, tmp_path / "h1"), "workers=1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    waiting = None
    try:
        _wait_until(gate.with_suffix(".locked").exists, first, "it held its locks")
        refused = subprocess.run(
            [sys.executable, "generate.py", *_overrides(out, tmp_path / "h2")], cwd=ROOT, capture_output=True, text=True,
            timeout=120,
        )
        assert refused.returncode == EXIT_USER_ERROR
        assert len(refused.stderr.splitlines()) <= 3
        assert f"is being written by another run (pid {first.pid} on {socket.gethostname()}, started" in refused.stderr
        log = tmp_path / "waiting.log"
        with open(log, "w") as stdout:
            waiting = subprocess.Popen(
                [sys.executable, "generate.py", *_overrides(out, tmp_path / "h3"), "wait_for_lock=true"],
                cwd=ROOT, stdout=stdout, stderr=subprocess.STDOUT,
            )
        _wait_until(lambda: "waiting for it to finish" in log.read_text(), waiting, "it waited")
        gate.with_suffix(".go").touch()
        assert first.wait(timeout=120) == 0
        assert waiting.wait(timeout=120) == 0
    finally:
        for process in (first, waiting):
            if process is not None:
                process.kill()
    assert f"wrote 0 zip(s) to {out}" in log.read_text()
    single = make_dataset(tmp_path / "single", TINY, workers=1)
    assert sorted(p.name for p in out.iterdir()) == ZIPS
    for path in single:
        with zipfile.ZipFile(out / path.name) as zf:
            assert zf.testzip() is None
        assert (out / path.name).read_bytes() == path.read_bytes()


@pytest.mark.slow
def test_killing_generate_kills_its_workers(tmp_path):
    # Two zips of 8,000 composites: the workers are busy for seconds.
    busy = Settings(n_bg=100, n_fg=20, placements=4, seed=0, jpeg_quality=SMALL.jpeg_quality)
    process = subprocess.Popen(
        [sys.executable, "generate.py", *_overrides(tmp_path / "out", tmp_path / "h", busy), "workers=2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _assert_workers_die_with(process, 2)


@pytest.mark.slow
def test_a_killed_cache_build_takes_its_workers_and_the_next_build_removes_its_partial(small_dataset, tmp_path):
    for zip_path in small_dataset.glob("*.zip"):
        (tmp_path / zip_path.name).symlink_to(zip_path)
    process = subprocess.Popen([sys.executable, "-c", STUCK_CACHE_BUILD, str(tmp_path)], cwd=ROOT, stderr=subprocess.DEVNULL)
    _assert_workers_die_with(process, 2)
    assert [p.name.split(".partial-")[1] for p in (tmp_path / "cache").glob("*.partial-*")] == [str(process.pid)]
    folder = datamodule(tmp_path, "data.cache=true").parts["train"].folder
    assert list((tmp_path / "cache").iterdir()) == [folder]
