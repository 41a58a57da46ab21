import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgbg.build.batch_zip import Settings
from fgbg.build.generation import generate
from fgbg.build.label import label_zips
from fgbg.build.sources import SampleScenes
from fgbg.data.index import index_zip
from fgbg.errors import EXIT_USER_ERROR
from fgbg.format import locks, names, writer, zips
from fgbg.tools.measure import measure
from tests.helpers.configs import compose_config
from tests.helpers.data import flip_a_byte_inside, make_dataset
from tests.helpers.teacher import TINY_SIZE, make_teacher

# Two zips: batch 1 with 40 composites, batch 2 with 8.
DATA = Settings(n_bg=2, n_fg=12, placements=1, seed=0, jpeg_quality=90)
ZIPS = ["batch1_images.zip", "batch2_images.zip"]


@pytest.fixture(scope="module")
def scene_zips(tmp_path_factory) -> Path:
    """The zips as generated with scene depth (read-only: tests label copies)."""
    out = tmp_path_factory.mktemp("scene")
    make_dataset(out, DATA, workers=1)
    return out


@pytest.fixture
def data(scene_zips, tmp_path) -> Path:
    return Path(shutil.copytree(scene_zips, tmp_path / "data"))


def _run(out_dir: Path, *overrides: str):
    import generate

    cfg = compose_config("generate", overrides=[f"out_dir={out_dir}", "progress=false", "workers=2", *overrides])
    generate.main(cfg)


def _refused(capsys, out_dir: Path, *overrides: str) -> str:
    """The one-line error that ``generate.py`` prints for these overrides (it exits with status 2)."""
    with pytest.raises(SystemExit) as stopped:
        _run(out_dir, *overrides)
    assert stopped.value.code == EXIT_USER_ERROR
    return capsys.readouterr().err


def _teacher_overrides(tiny_dir: Path) -> list[str]:
    return ["stage=depth", "depth=hub", f"depth.model={tiny_dir}", "depth.batch_size=8", "depth.device=cpu"]


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {m: zf.read(m) for m in zf.namelist()}


def _manifest(path: Path) -> dict:
    return json.loads(_members(path)[names.MANIFEST])


def _others(members: dict[str, bytes]) -> list[tuple[str, bytes]]:
    return [(m, b) for m, b in members.items() if m != names.MANIFEST and not m.startswith(names.DEPTH + "/")]


def test_depth_stage_relabels_each_zip_and_keeps_the_rest(data, scene_zips, tiny_dir):
    _run(data, *_teacher_overrides(tiny_dir))
    assert sorted(p.name for p in data.iterdir()) == ZIPS  # no .partial left
    for name in ZIPS:
        before, after = _members(scene_zips / name), _members(data / name)
        assert _others(after) == _others(before)  # every other member: same bytes, same order
        composites = [names.parse_member(m)[1] for m in after if m.startswith(names.FG_BG + "/")]
        depth = [m for m in after if m.startswith(names.DEPTH + "/")]
        assert depth == [names.composite_member(names.DEPTH, s) for s in composites]
        for member in depth:
            image = np.asarray(Image.open(io.BytesIO(after[member])))
            assert image.shape == (names.BG_SIZE, names.BG_SIZE)  # 8-bit grayscale, the composite's size
            assert after[member] != before[member]  # the scene's depth was replaced
        old, new = json.loads(before[names.MANIFEST]), json.loads(after[names.MANIFEST])
        assert new["settings"]["depth"] == {
            "source": "teacher",
            "model": str(tiny_dir),
            "revision": None,
            "input_size": TINY_SIZE,
            "dtype": "float32",
            "predicts": "disparity",
            "normalize": "image",
            "encoding": "uint8 = 255*(d - min d)/(max d - min d) per image, d = predicted disparity; brighter = nearer",
        }
        assert {**new["settings"], "depth": None} == {**old["settings"], "depth": None}
        assert new["counts"] == old["counts"] and new["fg_ids"] == old["fg_ids"]
        assert {"torch", "transformers"} <= set(new["versions"])
        assert len(index_zip(data / name).samples) == len(composites)  # training reads it as before


def test_interrupted_stage_resumes_per_zip_to_the_same_bytes(data, scene_zips, tiny_dir, tmp_path, monkeypatch):
    teacher = make_teacher(tiny_dir, batch_size=8)
    real = writer.BatchWriter.write_bytes

    def dies_in_batch_2(self, member, data):
        if member == "depth_fg_bg_jpg/depth_fg_bg_11_1_0_1.jpg":  # the first depth map of batch 2 (fg 11, 12)
            raise KeyboardInterrupt
        return real(self, member, data)

    monkeypatch.setattr(writer.BatchWriter, "write_bytes", dies_in_batch_2)
    with pytest.raises(KeyboardInterrupt):
        label_zips([data / n for n in ZIPS], teacher, quality=90, workers=2, show_progress=False)
    monkeypatch.setattr(writer.BatchWriter, "write_bytes", real)
    assert sorted(p.name for p in data.iterdir()) == ZIPS
    assert _manifest(data / ZIPS[0])["settings"]["depth"]["source"] == "teacher"
    assert (data / ZIPS[1]).read_bytes() == (scene_zips / ZIPS[1]).read_bytes()  # untouched

    finished = (data / ZIPS[0]).stat().st_mtime_ns
    assert label_zips([data / n for n in ZIPS], teacher, 90, workers=2, show_progress=False) == [data / ZIPS[1]]
    assert (data / ZIPS[0]).stat().st_mtime_ns == finished
    assert label_zips([data / n for n in ZIPS], teacher, 90, workers=2, show_progress=False) == []  # all done

    again = Path(shutil.copytree(scene_zips, tmp_path / "again"))
    label_zips([again / n for n in ZIPS], teacher, 90, workers=1, show_progress=False)
    for name in ZIPS:
        assert (data / name).read_bytes() == (again / name).read_bytes()


def test_zips_another_run_writes_are_not_labelled(data, scene_zips, tiny_dir):
    with locks.sole_writer(data / ZIPS[1]):
        with pytest.raises(zips.ArchiveError, match=f"{ZIPS[1]} is being written by another run .pid {os.getpid()} "):
            label_zips([data / n for n in ZIPS], make_teacher(tiny_dir, batch_size=8), 90, show_progress=False)
    assert all((data / n).read_bytes() == (scene_zips / n).read_bytes() for n in ZIPS)


def test_a_damaged_zip_is_not_labelled(data, tiny_dir):
    member = "fg_bg_jpg/fg_bg_12_2_1_1.jpg"
    flip_a_byte_inside(data / ZIPS[1], member)
    damaged = (data / ZIPS[1]).read_bytes()
    with pytest.raises(zips.ArchiveError, match=f"{ZIPS[1]}: member {member} is damaged"):
        label_zips([data / n for n in ZIPS], make_teacher(tiny_dir, batch_size=8), 90, show_progress=False)
    assert (data / ZIPS[1]).read_bytes() == damaged
    assert _manifest(data / ZIPS[0])["settings"]["depth"]["source"] == "scene"  # checked before any is labelled


def test_other_teacher_settings_relabel(data, tiny_dir):
    label_zips([data / n for n in ZIPS], make_teacher(tiny_dir, batch_size=8), 90, workers=2, show_progress=False)
    other = make_teacher(tiny_dir, input_size=42, batch_size=8)
    assert label_zips([data / n for n in ZIPS], other, 90, workers=2, show_progress=False) == [data / n for n in ZIPS]
    assert _manifest(data / ZIPS[0])["settings"]["depth"]["input_size"] == 42


def test_zip_without_manifest_is_labelled(data, tiny_dir):
    # The seed's own zips carry no manifest.
    members = _members(data / ZIPS[1])
    with zipfile.ZipFile(data / ZIPS[1], "w") as zf:
        for member, content in members.items():
            if member != names.MANIFEST:
                zf.writestr(member, content)
    label_zips([data / ZIPS[1]], make_teacher(tiny_dir, batch_size=8), 90, workers=2, show_progress=False)
    manifest = _manifest(data / ZIPS[1])
    assert manifest["settings"]["depth"]["model"] == str(tiny_dir) and manifest["counts"] == {names.DEPTH: 8}


def test_generate_with_a_teacher_writes_composites_then_labels(scene_zips, tiny_dir, tmp_path):
    out = tmp_path / "taught"
    teacher = make_teacher(tiny_dir, batch_size=8)
    written = generate(SampleScenes(DATA.seed), teacher, out, DATA, workers=2, show_progress=False)
    assert written == [out / n for n in ZIPS]
    for name in ZIPS:
        taught, scene = _members(out / name), _members(scene_zips / name)
        assert [m for m in taught if m.startswith(names.FG_BG)] == [m for m in scene if m.startswith(names.FG_BG)]
        assert all(taught[m] == scene[m] for m in taught if m.startswith(names.FG_BG))
        assert _manifest(out / name)["settings"]["depth"]["model"] == str(tiny_dir)
    # Finished and labelled with the same teacher: nothing to do.
    assert generate(SampleScenes(DATA.seed), teacher, out, DATA, workers=1, show_progress=False) == []


def test_missing_weights_stop_before_anything_is_written(offline, data, scene_zips, tmp_path, capsys):
    hub = ["depth=hub", "depth.model=fgbg-tests/no-such-depth-model"]
    assert "hf download fgbg-tests/no-such-depth-model" in _refused(capsys, data, "stage=depth", *hub)
    assert all((data / n).read_bytes() == (scene_zips / n).read_bytes() for n in ZIPS)
    assert sorted(p.name for p in data.iterdir()) == ZIPS
    assert "fgbg-tests/no-such-depth-model" in _refused(capsys, tmp_path / "new", "n_bg=2", "n_fg=3", "placements=1", *hub)
    assert not (tmp_path / "new").exists()


def test_depth_stage_needs_a_teacher(data, capsys):
    assert "error: stage=depth needs a depth model" in _refused(capsys, data, "stage=depth", "depth=scene")


def test_measure_times_the_stage_and_the_forward(data, scene_zips, tiny_dir):
    result = measure(data / ZIPS[0], make_teacher(tiny_dir, batch_size=8), quality=90, workers=2)
    assert result["images"] == 40 and result["stage_s"] > 0 and result["forward_s"] > 0
    assert result["ratio"] == result["stage_s"] / result["forward_s"]
    assert (data / ZIPS[0]).read_bytes() == (scene_zips / ZIPS[0]).read_bytes()  # measured on a copy


def test_copied_members_keep_their_records(scene_zips, tmp_path):
    source = scene_zips / ZIPS[1]
    with zipfile.ZipFile(source) as zf, writer.atomic_zip(tmp_path / ZIPS[1], 90) as batch_writer:
        batch_writer.copy_members(zf, zf.infolist())
    assert (tmp_path / ZIPS[1]).read_bytes() == source.read_bytes()
