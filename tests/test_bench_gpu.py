"""The GPU bench (bench/gpu.py) runs end to end on the CPU at its quick sizes, and refuses a missing GPU in one line."""

import re

import pytest
import torch

from bench.gpu import QUICK, _models, main


def _rows(results: str) -> dict[str, tuple[str, str]]:
    """The written table's rows: measure -> (ours, note)."""
    rows = {}
    for line in results.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] not in ("measure", "---"):
            rows[cells[0]] = (cells[3], cells[6])
    return rows


def _expected() -> list[str]:
    workers = [f"num_workers {w}" for w in QUICK.workers]
    models = _models()
    return [
        *(f"1 Loader only: zips, {w}" for w in workers),
        "1b Decoded cache: built once",
        *(f"1c Loader only: decoded cache, {w}" for w in workers),
        "1d Loader only: decoded cache on cpu, num_workers 0",
        "2 JPEG read only",
        "2a JPEG decode on the CPU",
        "2b JPEG decode on cpu",
        *(f"3 Model only: {m} " for m in models),
        *("4 End to end: " for _ in models),
        "5 Depth teacher: forward only",
        "5a Depth stage end to end",
    ]


@pytest.mark.slow
def test_quick_run_on_the_cpu_gives_every_row(tmp_path, capsys, one_torch_thread):
    results = tmp_path / "RESULTS_GPU.md"
    main(["--device", "cpu", "--quick", "--work", str(tmp_path), "--results", str(results)])

    assert "| 1 Loader only: zips, num_workers 0 |" in capsys.readouterr().out  # printed as well as written
    rows = _rows(results.read_text())
    measures = list(rows)
    expected = _expected()
    assert len(measures) == len(expected), measures
    for measure, prefix in zip(measures, expected):
        assert measure.startswith(prefix), (measure, prefix)
        ours, note = rows[measure]
        assert float(ours.replace(",", "")) > 0, (measure, note)
    assert {m.split(" feeding ")[-1] for m in measures if m.startswith("4 ")} == set(_models())
    for measure in measures:
        if measure.startswith("4 "):
            assert re.match(r"limit: (loader|model) ", rows[measure][1]), rows[measure]
    assert not list(tmp_path.glob("fgbg-bench-gpu-*")), "the work folder is removed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there")
def test_a_missing_gpu_stops_the_run_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main(["--work", str(tmp_path)])
    message = str(stopped.value.code)
    assert "no CUDA device" in message and "\n" not in message
    assert not list(tmp_path.iterdir()), "nothing is made before the check"
