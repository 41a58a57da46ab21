import dataclasses
import gc
import inspect
import io
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from concurrent.futures import Future

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from fgbg.build.batch_zip import Settings
from fgbg.build.compose import flip_horizontal, mask_on_black, placements
from fgbg.build.generation import _follow, _init_worker, generate
from fgbg.build.scene_depth import SceneDepth
from fgbg.build.scenes import _blend, background, foreground
from fgbg.errors import EXIT_USER_ERROR, ConfigError
from fgbg.format import manifest, names, writer, zips
from fgbg.progress import LogProgress
from tests.helpers.configs import compose_config
from tests.helpers.data import SMALL, make_dataset
from tests.helpers.paths import ROOT


def _decode(zf: zipfile.ZipFile, member: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(zf.read(member))))


def test_exact_counts_per_folder_per_zip(small_dataset):
    assert sorted(p.name for p in small_dataset.iterdir()) == ["batch1_images.zip", "batch2_images.zip"]
    for batch, n_fg in ((1, 10), (2, 2)):
        with zipfile.ZipFile(small_dataset / names.zip_name(batch)) as zf:
            members = [m for m in zf.namelist() if m != names.MANIFEST]
            per_folder = Counter(names.parse_member(m)[0] for m in members)
            manifest = json.loads(zf.read(names.MANIFEST))
        n = n_fg * 2 * SMALL.n_bg * SMALL.placements
        expected = {names.FG: n_fg, names.MASK: n_fg, names.BG: SMALL.n_bg, names.FG_BG: n, names.MASK_BLACK: n, names.DEPTH: n}
        assert dict(per_folder) == expected
        assert manifest["counts"] == expected
        assert manifest["fg_ids"] == list(names.fg_ids_of_batch(batch, SMALL.n_fg))


def test_images_have_the_documented_sizes(small_dataset):
    with zipfile.ZipFile(small_dataset / "batch1_images.zip") as zf:
        assert _decode(zf, "bg_jpg/bg_img_1.jpg").shape == (160, 160, 3)
        assert _decode(zf, "fg_jpg/fg_img_1.jpg").shape == (80, 80, 3)
        assert _decode(zf, "mask_jpg/mask_img_1.jpg").shape == (80, 80)
        assert _decode(zf, "fg_bg_jpg/fg_bg_1_1_0_1.jpg").shape == (160, 160, 3)
        assert _decode(zf, "mask_black_jpg/bg_mask_1_1_0_1.jpg").shape == (160, 160)
        assert _decode(zf, "depth_fg_bg_jpg/depth_fg_bg_1_1_0_1.jpg").shape == (160, 160)


@pytest.mark.parametrize("flip", [0, 1])
def test_mask_is_the_composites_foreground_region(small_dataset, flip):
    fg, bg = 3, 5
    rgba, relief = foreground(SMALL.seed, fg)
    if flip:
        rgba, relief = flip_horizontal(rgba), flip_horizontal(relief)
    alpha = rgba[..., 3] > 0
    bg_rgb, bg_depth = background(SMALL.seed, bg)
    scene = SceneDepth()
    with zipfile.ZipFile(small_dataset / "batch1_images.zip") as zf:
        for k, (x, y) in enumerate(placements(SMALL.seed, fg, bg, flip, SMALL.placements), start=1):
            sample = names.SampleId(fg, bg, flip, k)
            mask = _decode(zf, names.composite_member(names.MASK_BLACK, sample)) > 127
            assert np.array_equal(mask, mask_on_black(alpha, x, y, names.BG_SIZE) > 0)
            composite = _decode(zf, names.composite_member(names.FG_BG, sample)).astype(int)
            fg_region = composite[y : y + 80, x : x + 80][alpha]
            under = bg_rgb[y : y + 80, x : x + 80][alpha]
            assert np.abs(fg_region - rgba[..., :3][alpha]).mean() < 12  # JPEG 4:2:0 loss only
            assert np.abs(fg_region - under).mean() > 30
            assert np.abs(composite[~mask] - bg_rgb[~mask]).mean() < 6
            depth = _decode(zf, names.composite_member(names.DEPTH, sample)).astype(int)
            z = bg_depth.copy()
            z[y : y + 80, x : x + 80][alpha] = scene.foreground_depth(bg_depth[y : y + 80, x : x + 80], relief, alpha)[alpha]
            assert np.abs(depth - scene.encode(z)).mean() < 2
            # The foreground stands in front of what it covers: brighter than the background there.
            assert (depth[mask] > scene.encode(bg_depth)[mask]).all()


def test_flip_is_mirrored_in_the_zip(small_dataset):
    # A foreground that is not its own mirror image, so the test can tell a flip from a copy.
    fg = next(i for i in range(1, 11) if not np.array_equal(*(lambda a: (a, a[:, ::-1]))(foreground(SMALL.seed, i)[0][..., 3])))
    with zipfile.ZipFile(small_dataset / "batch1_images.zip") as zf:
        x0, y0 = placements(SMALL.seed, fg, 2, 0, SMALL.placements)[0]
        x1, y1 = placements(SMALL.seed, fg, 2, 1, SMALL.placements)[0]
        plain = _decode(zf, f"mask_black_jpg/bg_mask_{fg}_2_0_1.jpg")[y0 : y0 + 80, x0 : x0 + 80] > 127
        mirrored = _decode(zf, f"mask_black_jpg/bg_mask_{fg}_2_1_1.jpg")[y1 : y1 + 80, x1 : x1 + 80] > 127
    assert np.array_equal(plain[:, ::-1], mirrored)
    assert not np.array_equal(plain, mirrored)


def test_same_seed_same_bytes_other_seed_other_bytes(small_dataset, tmp_path):
    again = make_dataset(tmp_path / "again", workers=2)
    for path in again:
        assert path.read_bytes() == (small_dataset / path.name).read_bytes()
    other = make_dataset(tmp_path / "other", Settings(**{**SMALL.__dict__, "seed": 1}), batch=2)
    assert other[0].read_bytes() != (small_dataset / "batch2_images.zip").read_bytes()


def test_the_pool_stops_waiting_the_moment_its_last_batch_is_done():
    futures, progress_queue, bar = [Future(), Future()], queue.Queue(), LogProgress(total=3, disable=True)
    finished = []

    def workers():
        progress_queue.put(2)
        futures[0].set_exception(OSError("disk full"))  # a failed batch ends its wait too
        progress_queue.put(1)
        time.sleep(0.01)  # the last batch closes its zip after its last progress report
        finished.append(time.monotonic())
        futures[1].set_result("batch2_images.zip")

    thread = threading.Thread(target=workers)
    thread.start()
    _follow(futures, progress_queue, bar)
    waited = time.monotonic() - finished[0]
    thread.join()
    assert bar.n == 3
    assert waited < 0.1  # polling the queue with a timeout waited out the timeout (0.2 s) here


def _frozen_in_a_worker(answer) -> None:
    _init_worker(os.getppid(), None, None)
    answer.put(gc.get_freeze_count())


def test_a_worker_keeps_what_it_inherits_out_of_the_garbage_collector():
    context = multiprocessing.get_context("fork")
    answer = context.Queue()
    worker = context.Process(target=_frozen_in_a_worker, args=(answer,))
    worker.start()
    assert answer.get(timeout=30) > 1000  # the test process's objects, never walked by the worker's collections
    worker.join()


def test_a_surface_blended_where_it_is_seen_has_the_full_images_values():
    rng = np.random.default_rng(0)
    pattern, seen = rng.uniform(0, 1, (16, 16)).astype(np.float32), rng.uniform(0, 1, (16, 16)) < 0.3
    base, accent = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    assert np.array_equal(_blend(base, accent, pattern[seen], 0.35), _blend(base, accent, pattern, 0.35)[seen])


def test_interrupted_run_resumes_to_identical_bytes(small_dataset, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    calls = {"n": 0}
    real = writer.BatchWriter.write_image

    def dies_midway(self, member, image):
        calls["n"] += 1
        if calls["n"] == 1600:  # batch 1 makes 1,472 images, so this is inside batch 2
            raise KeyboardInterrupt
        return real(self, member, image)

    monkeypatch.setattr(writer.BatchWriter, "write_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(out, workers=1)
    assert sorted(p.name for p in out.iterdir()) == ["batch1_images.zip"]  # no partial zip left behind
    monkeypatch.setattr(writer.BatchWriter, "write_image", real)
    finished = (out / "batch1_images.zip").stat().st_mtime_ns
    assert [p.name for p in make_dataset(out, workers=1)] == ["batch2_images.zip"]  # batch 1 skipped
    assert (out / "batch1_images.zip").stat().st_mtime_ns == finished
    for name in ("batch1_images.zip", "batch2_images.zip"):
        assert (out / name).read_bytes() == (small_dataset / name).read_bytes()


def test_existing_zip_with_other_settings_is_not_silently_kept(small_dataset, tmp_path):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "batch2_images.zip").write_bytes((small_dataset / "batch2_images.zip").read_bytes())
    with pytest.raises(zips.ArchiveError, match="batch2_images.zip exists and was made with other settings"):
        make_dataset(out, Settings(**{**SMALL.__dict__, "placements": 3}), batch=2)
    make_dataset(out, Settings(**{**SMALL.__dict__, "placements": 3}), batch=2, overwrite=True)
    assert manifest.read_manifest(out / "batch2_images.zip")["settings"]["placements"] == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("placements=81", "placements=81: expected a whole number 1..80"),
        ("n_bg=0", "n_bg=0: expected a whole number >= 1"),
        ("n_bg=ten", "n_bg='ten': expected a whole number >= 1"),
        ("seed=abc", "seed='abc': expected a whole number 0..4294967295"),
        ("seed=-1", "seed=-1: expected a whole number 0..4294967295"),
        ("jpeg_quality=101", "jpeg_quality=101: expected a whole number 1..100"),
        ("batch=3", "batch=3: expected a whole number 1..2"),
        ("workers=0", "workers=0: expected a whole number >= 1"),
    ],
)
def test_bad_config_is_one_line_before_writing(tmp_path, capsys, override, message):
    import generate

    cfg = compose_config("generate", overrides=["n_bg=2", "n_fg=12", f"out_dir={tmp_path / 'out'}", "progress=false", override])
    with pytest.raises(SystemExit) as stopped:
        generate.main(cfg)
    assert stopped.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [("n_fg", 0, "n_fg=0: expected"), ("placements", 2.5, "placements=2.5: expected"), ("seed", 2**32, "seed=4294967296")],
)
def test_settings_check_names_the_key(field, value, message):
    with pytest.raises(ConfigError, match=message):
        Settings(**{**SMALL.__dict__, field: value}).check()


def test_batch_and_workers_are_checked_where_they_enter(tmp_path):
    with pytest.raises(ConfigError, match="batch='1': expected a whole number 1..2"):
        make_dataset(tmp_path, batch="1")
    with pytest.raises(ConfigError, match="workers=0: expected a whole number >= 1"):
        make_dataset(tmp_path, workers=0)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_bad_value_on_the_command_line_is_one_short_error(tmp_path):
    command = [sys.executable, "generate.py", "seed=abc", f"out_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_USER_ERROR
    assert len(result.stderr.splitlines()) <= 3
    assert "error: seed='abc': expected a whole number 0..4294967295" in result.stderr


def test_generate_entry_point_composes_and_writes(tmp_path):
    import generate

    cfg = compose_config("generate", overrides=["n_bg=2", "n_fg=3", "placements=1", f"out_dir={tmp_path}", "progress=false"])
    generate.main(cfg)
    written = manifest.read_manifest(tmp_path / "batch1_images.zip")
    assert written["counts"][names.FG_BG] == 3 * 2 * 2 * 1
    assert written["settings"]["depth"]["source"] == "scene"


def test_conf_generate_states_the_code_defaults():
    cfg = compose_config("generate")
    assert Settings(**{f.name: cfg[f.name] for f in dataclasses.fields(Settings)}) == Settings()
    defaults = {name: p.default for name, p in inspect.signature(generate).parameters.items() if p.default is not p.empty}
    yaml_key = {"show_progress": "progress"}
    assert {name: cfg[yaml_key.get(name, name)] for name in defaults if name != "settings"} == {
        name: value for name, value in defaults.items() if name != "settings"
    }
    assert defaults["settings"] == Settings()


def test_conf_depth_scene_states_the_code_defaults():
    made = instantiate(compose_config("generate", ["depth=scene"]).depth)
    assert type(made) is SceneDepth and vars(made) == vars(SceneDepth())
