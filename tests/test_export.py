import json

import numpy as np
import pytest
import torch

import export as export_script
from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.transforms import Preprocessing
from fgbg.errors import ConfigError
from fgbg.tasks import export as exporting
from fgbg.tasks.export import TOLERANCE, example_inputs, export, export_model, preparation, run_onnx, run_torchscript
from fgbg.tasks.predict import PredictionError
from fgbg.training.module import build_module, load_module
from tests.helpers.configs import compose_config, module_config
from tests.helpers.paths import ROOT

CHECKPOINTS = ROOT / "tests" / "data"  # c826fc5_<model>.ckpt: 32x32 gray, no normalisation, with depth
RUNS = {"onnx": run_onnx, "torchscript": run_torchscript}


def _ckpt(model: str):
    return CHECKPOINTS / f"c826fc5_{model}.ckpt"


def _expected(module, inputs) -> list[torch.Tensor]:
    """What the module predicts: ``predict_step``'s mask (and depth)."""
    with torch.inference_mode():
        prediction = module.eval().predict_step({BACKGROUND: inputs[0], COMPOSITE: inputs[1]}, 0)
    return list(prediction.values())


def _assert_round_trip(module, format, path, batch_sizes=(1, 3)):
    """The file's outputs equal the module's within TOLERANCE, for batch sizes other than the traced one (2)."""
    for batch in batch_sizes:
        inputs = example_inputs(module.preprocessing, batch=batch, seed=batch)
        got, expected = RUNS[format](path, inputs), _expected(module, inputs)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a.shape == b.shape == (batch, 1, 32, 32)
            assert torch.allclose(a, b, atol=TOLERANCE, rtol=0)


def _subtraction():
    """A calibrated-looking subtraction baseline (buffers only, no depth) on 32x32 gray inputs."""
    module = build_module(module_config("subtraction"))
    module.net.threshold.fill_(0.05)  # most random pixel pairs differ more: both classes
    module.net.opening.fill_(3)
    module.preprocessing = Preprocessing(32, True, None)
    return module


def test_onnx_of_a_checkpoint_matches_pytorch_with_its_preprocessing_beside_it(tmp_path, one_torch_thread):
    model_path, json_path = export(_ckpt("convgen"), "onnx", tmp_path / "out", "convgen")
    assert (model_path.name, json_path.name) == ("convgen.onnx", "convgen.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["convgen.json", "convgen.onnx"]  # weights inside
    _assert_round_trip(load_module(_ckpt("convgen")), "onnx", model_path)

    described = json.loads(json_path.read_text())
    assert described["file"] == "convgen.onnx" and described["model"] == "ConvGen"
    assert described["preprocessing"] == {"image_size": 32, "grayscale": True, "stats": None}
    inputs = {"shape": ["batch", 3, 32, 32], "dtype": "float32"}
    assert described["inputs"] == {BACKGROUND: inputs, COMPOSITE: inputs}
    assert list(described["outputs"]) == [MASK, DEPTH]
    assert described["outputs"][DEPTH]["shape"] == ["batch", 1, 32, 32]
    assert any("32 x 32" in step for step in described["prepare"])
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [BACKGROUND, COMPOSITE]
    assert [o.name for o in session.get_outputs()] == [MASK, DEPTH]
    assert session.get_inputs()[0].shape == ["batch", 3, 32, 32]


@pytest.mark.parametrize("model", ["unet", "convgen"])
def test_torchscript_round_trips(tmp_path, model, one_torch_thread):
    model_path, json_path = export(_ckpt(model), "torchscript", tmp_path, "model")
    assert model_path.suffix == ".pt" and json.loads(json_path.read_text())["format"] == "torchscript"
    _assert_round_trip(load_module(_ckpt(model)), "torchscript", model_path)


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_the_subtraction_baseline_exports_its_mask_alone(tmp_path, format, one_torch_thread):
    module = _subtraction()
    path = tmp_path / f"model.{format}"
    difference = export_model(module, format, path)
    assert 0 <= difference <= TOLERANCE
    _assert_round_trip(module, format, path)
    inputs = example_inputs(module.preprocessing, batch=1)
    (mask,) = RUNS[format](path, inputs)  # no depth output
    # Its threshold and opening were recorded: a mask of both classes, exactly where PyTorch's is.
    assert set(np.unique(mask.numpy().round(3))) == {0.0, 1.0}


def test_export_py_writes_to_the_run_folder_unless_out_is_given(tmp_path, one_torch_thread):
    run = tmp_path / "run"
    cfg = compose_config("export", [f"ckpt_path={_ckpt('convgen')}", "format=torchscript", f"paths.output_dir={run}"])
    assert cfg.out == str(run) and cfg.name == "model"
    export_script.main(cfg)
    assert sorted(p.name for p in run.iterdir()) == ["model.json", "model.pt"]


def test_refuses_another_format_and_a_checkpoint_without_preprocessing(tmp_path):
    with pytest.raises(ConfigError, match="format='tflite'"):
        export(_ckpt("convgen"), "tflite", tmp_path, "model")
    checkpoint = torch.load(_ckpt("convgen"), weights_only=True)
    checkpoint["hyper_parameters"]["config"]["preprocessing"] = None
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(PredictionError, match="records no data settings"):
        export(tmp_path / "old.ckpt", "onnx", tmp_path / "out", "model")
    assert not (tmp_path / "out").exists()


def test_preparation_states_the_colour_and_the_normalisation():
    stats = {"bg_jpg": {"mean": 0.42, "std": 0.2}, "fg_bg_jpg": {"mean": 0.45, "std": 0.25}}
    steps = preparation(Preprocessing(64, False, stats))
    assert "read each as RGB, 8 bits per channel" in steps
    assert "background: subtract 0.42 and divide by 0.2" in steps
    assert "composite: subtract 0.45 and divide by 0.25" in steps
    assert any("channels first" in step for step in steps)
    gray = preparation(Preprocessing(64, True, None))
    assert "no normalisation" in gray and any("repeat the gray channel 3 times" in step for step in gray)


def test_a_file_that_differs_from_pytorch_is_not_kept(tmp_path, monkeypatch):
    run = exporting.run_torchscript
    monkeypatch.setattr(exporting, "run_torchscript", lambda path, inputs: [t + 1e-3 for t in run(path, inputs)])
    with pytest.raises(RuntimeError, match="differs from PyTorch's"):
        export_model(load_module(_ckpt("convgen")), "torchscript", tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_example_inputs_are_prepared_as_the_training_data():
    stats = {"bg_jpg": {"mean": 0.5, "std": 0.25}, "fg_bg_jpg": {"mean": 0.25, "std": 0.5}}
    background, composite = example_inputs(Preprocessing(16, False, stats), batch=3)
    assert background.shape == composite.shape == (3, 3, 16, 16) and background.dtype == torch.float32
    # Uniform pixels in [0, 1], normalised per category: [-2, 2] and [-0.5, 1.5].
    assert -2 <= float(background.min()) < -1.5 and 1.5 < float(background.max()) <= 2
    assert -0.5 <= float(composite.min()) < -0.4 and 1.4 < float(composite.max()) <= 1.5
