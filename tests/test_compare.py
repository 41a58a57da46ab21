import subprocess
import sys

import pytest

from fgbg.tools.compare import comparison_table
from tests.helpers.paths import ROOT


def test_table_has_one_row_per_run_and_marks_missing_values():
    runs = [
        {"model": "Net", "parameters": 6978528, "fit_seconds": 12.3, "held_out": "8 bg / 5 fg", "test/mask_iou": 0.5,
         "test_perturbed/mask_iou": 0.25, "test/depth_rmse_m": 1.25},
        {"model": "Unet", "parameters": 100, "test/mask_iou": 0.97123},
    ]
    lines = comparison_table(runs).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| model | parameters |")
    assert "| Net | 6,978,528 | 12 | n/a | n/a | 8 bg / 5 fg | 0.500 | 0.250 |" in lines[2] and "| 1.250 |" in lines[2]
    assert "| Unet | 100 | n/a |" in lines[3] and "| 0.971 |" in lines[3]


@pytest.mark.slow
def test_compare_experiment_writes_one_table_of_the_baseline_and_two_models(small_dataset, tmp_path):
    command = [
        sys.executable, "train.py", "-m", "experiment=compare", f"data.data_dir={small_dataset}", "data.strategy=40k",
        "data.image_size=32", "data.batch_size=4", "data.num_workers=0", "trainer.max_time=null", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", "callbacks=none", f"hydra.sweep.dir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "compare.md").read_text().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| Subtraction", "| ConvGen", "| UNet"]
    cells = [row.strip("| ").split(" | ") for row in rows]  # model, parameters, time, steps, images/s, held out, ...
    assert all("n/a" not in row[5:] for row in cells[1:])  # every test metric is there
    mask, depth = cells[0][5:12], cells[0][12:]
    assert "n/a" not in mask and set(depth) == {"n/a"}  # the baseline predicts no depth
