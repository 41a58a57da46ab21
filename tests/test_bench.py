"""``make bench``'s quick run goes end to end: every row measured, none failed, the table written with its load."""

import pytest

from bench.run import WORKERS, main


@pytest.mark.slow
def test_quick_run_measures_every_row(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    main(["--quick", "--work", str(tmp_path), "--results", str(results)])
    text = results.read_text()
    assert "load average (1/5/15 min): " in text and " at the start, " in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    measures = [row.split("|")[1].strip() for row in rows]
    for workers in WORKERS:
        assert f"3 Loading, {workers} workers: bg, fg_bg, mask, depth at 64x64" in measures
    trained = [m for m in measures if m.startswith("4 Training end to end")]
    assert [m.split(",")[1].split("(")[0].strip() for m in trained] == ["convgen", "net", "unet"]
    assert not [row for row in rows if "failed:" in row]
    # Every row has ours measured (a number), not "-".
    assert all(row.split("|")[4].strip() not in ("", "-") for row in rows)
    assert list(tmp_path.iterdir()) == [results]  # the data made is removed
