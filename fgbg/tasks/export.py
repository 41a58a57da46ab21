"""``export.py``'s body: a checkpoint as a standalone model file, ONNX or TorchScript, with its preprocessing beside it.

In ``out``:

    <name>.onnx | <name>.pt   the model: (background, composite) -> (mask, depth)
    <name>.json               how to feed it: the preprocessing, the inputs' and outputs' names and shapes, and the
                              steps that prepare an image (:func:`description`)

The exported model (:class:`ExportedModel`) takes the inputs as the checkpoint's training data made them
(:class:`~fgbg.data.transforms.Preprocessing`), float32 ``(batch, 3, S, S)`` each (any batch size), and returns
``mask``, the foreground probability, and ``depth`` in [0, 1] (brighter = nearer), ``(batch, 1, S, S)`` each:
what ``MaskDepthModule.predict_step`` returns. A checkpoint without depth (mask-only data, the subtraction
baseline) exports the mask alone: one output, and the JSON lists only it.

ONNX goes through ``torch.export`` (``torch.onnx.export(dynamo=True)``). The subtraction baseline's forward reads
its buffers in Python (the threshold check, the opening's size), which ``torch.export`` cannot capture; it goes
through the TorchScript-based exporter, which records those values as the constants they are. TorchScript is
``torch.jit.trace``. Either file is loaded back and checked against PyTorch's output before it is kept.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fgbg.data.batch import DEPTH, INPUTS, MASK
from fgbg.data.transforms import INPUT_CATEGORIES, Preprocessing
from fgbg.errors import check_choice
from fgbg.format.writer import atomic_path
from fgbg.models.subtraction import Subtraction
from fgbg.tasks.predict import load_predictor
from fgbg.training.module import MaskDepthModule, bounded_depth

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # format -> the model file's suffix
BATCH = "batch"  # the name of the inputs' and outputs' dynamic first axis
EXAMPLE_BATCH = 2  # samples traced and checked: torch.export would specialise a batch of 1 to a constant
TOLERANCE = 1e-4  # the largest difference from PyTorch's outputs a kept file may show
# Models whose forward reads buffers in Python: ONNX through the TorchScript-based exporter (see the docstring).
TRACED_FOR_ONNX = (Subtraction,)
# The ONNX optimiser's loggers: a dozen INFO lines per export about the nodes it removed or folded.
QUIET_LOGGERS = ("onnx_ir", "onnxscript")


class ExportedModel(nn.Module):
    """``forward(background, composite)`` ``(B, 3, S, S)`` each -> ``(mask, depth)`` ``(B, 1, S, S)`` each, or
    ``(mask,)`` for a module without depth: the module's ``predict_step`` on tensors, so it traces.

    Holds the module's ``net``, not the LightningModule, which tracing cannot walk (its ``trainer`` property
    raises outside a fit).
    """

    def __init__(self, module: MaskDepthModule):
        super().__init__()
        self.net = module.net
        self.with_depth = module.with_depth

    def forward(self, background: Tensor, composite: Tensor) -> tuple[Tensor, ...]:
        mask_logits, depth = self.net(background, composite)
        if not self.with_depth:
            return (torch.sigmoid(mask_logits),)
        return torch.sigmoid(mask_logits), bounded_depth(depth, self.net.depth_output)


def output_names(module: MaskDepthModule | ExportedModel) -> tuple[str, ...]:
    """The exported model's outputs, in order: ``mask`` and ``depth``, or ``mask`` alone without depth."""
    return (MASK, DEPTH) if module.with_depth else (MASK,)


def export(ckpt_path: str | Path, format: str, out: str | Path, name: str) -> list[Path]:
    """Write ``<out>/<name><suffix>`` (``format``: one of :data:`FORMATS`) and ``<out>/<name>.json`` for checkpoint
    ``ckpt_path``; returns both paths.

    Raises :class:`~fgbg.errors.ConfigError` for another format, and what
    :func:`~fgbg.tasks.predict.load_predictor` raises for a checkpoint that is missing, unreadable, or without
    its preprocessing.
    """
    check_choice("format", format, tuple(FORMATS))
    module = load_predictor(ckpt_path).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / f"{name}{FORMATS[format]}"
    difference = export_model(module, format, model_path)
    described = description(module, format, model_path.name, str(ckpt_path))
    json_path = out / f"{name}.json"
    with atomic_path(json_path) as partial:
        partial.write_text(json.dumps(described, indent=2) + "\n")
    log.info(
        "%s exported as %s: %s (outputs %s; at most %.1e from PyTorch's), how to feed it: %s",
        ckpt_path, format, model_path, ", ".join(described["outputs"]), difference, json_path,
    )  # fmt: skip
    return [model_path, json_path]


def export_model(module: MaskDepthModule, format: str, path: Path) -> float:
    """Write ``module`` (on the CPU, in eval mode) as ``format`` to ``path``, loaded back and checked on a batch
    of :func:`example_inputs`; returns the largest difference from PyTorch's outputs (at most ``TOLERANCE``,
    else RuntimeError and nothing written)."""
    model = ExportedModel(module).eval()
    example = example_inputs(module.preprocessing)
    with torch.inference_mode():
        expected = model(*example)
    with atomic_path(path) as partial:
        if format == "onnx":
            _write_onnx(model, example, partial)
            outputs = run_onnx(partial, example)
        else:
            _write_torchscript(model, example, partial)
            outputs = run_torchscript(partial, example)
        difference = max(float((got - want).abs().max()) for got, want in zip(outputs, expected))
        if not difference <= TOLERANCE:  # NaN too
            raise RuntimeError(f"{path}: the exported model differs from PyTorch's by {difference} > {TOLERANCE}")
    return difference


def example_inputs(preprocessing: Preprocessing, batch: int = EXAMPLE_BATCH, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``background``, ``composite`` ``(batch, 3, S, S)``: random pixels (seeded) prepared as the training data
    were, so the values have the range the model saw."""
    side = preprocessing.image_size
    shape = (batch, side, side) if preprocessing.grayscale else (batch, side, side, 3)
    rng = np.random.default_rng(seed)
    background, composite = (rng.integers(0, 256, shape, dtype=np.uint8) for _ in INPUTS)
    return preprocessing.inputs(background, composite)


def run_onnx(path: Path, inputs: tuple[Tensor, Tensor]) -> list[Tensor]:
    """The ONNX file's outputs for ``(background, composite)``, through onnxruntime on the CPU."""
    import onnxruntime  # only here: the rest of the project runs without it

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in zip(INPUTS, inputs)}
    return [torch.from_numpy(output) for output in session.run(None, feed)]


def run_torchscript(path: Path, inputs: tuple[Tensor, Tensor]) -> list[Tensor]:
    """The TorchScript file's outputs for ``(background, composite)``."""
    with warnings.catch_warnings():
        # torch 2.14 deprecates TorchScript for torch.export; format=torchscript asked for it.
        warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)
        model = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return list(model(*inputs))


def description(module: MaskDepthModule, format: str, file: str, checkpoint: str) -> dict:
    """What ``<name>.json`` holds: the file, its inputs and outputs (name, shape, meaning), the preprocessing
    (``Preprocessing.to_config()``) and, as text, the steps that prepare an image (:func:`preparation`)."""
    preprocessing = module.preprocessing
    side = preprocessing.image_size
    meanings = {
        MASK: "foreground probability in [0, 1]; > 0.5 is foreground",
        DEPTH: "depth in [0, 1], brighter = nearer (the training targets' scale)",
    }
    return {
        "format": format,
        "file": file,
        "checkpoint": checkpoint,
        "model": type(module.net).__name__,
        "inputs": {key: {"shape": [BATCH, 3, side, side], "dtype": "float32"} for key in INPUTS},
        "outputs": {
            key: {"shape": [BATCH, 1, side, side], "dtype": "float32", "meaning": meanings[key]}
            for key in output_names(module)
        },
        "preprocessing": preprocessing.to_config(),
        "prepare": preparation(preprocessing),
        "in_python": (
            "fgbg.data.transforms.Preprocessing(**preprocessing).inputs(background, composite) prepares uint8 "
            "pixels (B, H, W) (gray) or (B, H, W, 3) (RGB), as fgbg.tasks.predict does"
        ),
    }


def preparation(preprocessing: Preprocessing) -> list[str]:
    """The steps that make a background or composite image into the exported model's input, as text."""
    side = preprocessing.image_size
    gray = "gray (the luma, as a JPEG decoder's gray output or PIL's convert('L'))"
    colour = gray if preprocessing.grayscale else "RGB"
    steps = [
        "the background and the composite have the same size (any; the outputs come at S x S: resize them back)",
        f"read each as {colour}, 8 bits per channel",
        f"resize to {side} x {side} (S), bilinear with antialiasing",
        "scale to [0, 1]: divide by 255",
    ]
    if preprocessing.stats is None:
        steps.append("no normalisation")
    else:
        for key in INPUTS:
            stats = preprocessing.stats[INPUT_CATEGORIES[key]]
            steps.append(f"{key}: subtract {stats['mean']} and divide by {stats['std']}")
    layout = "repeat the gray channel 3 times" if preprocessing.grayscale else "channels first"
    steps.append(f"{layout}: float32 (3, S, S); stack samples on a first axis: ({BATCH}, 3, S, S)")
    return steps


def _batch_axis() -> tuple[dict, dict]:
    """``dynamic_shapes`` of the two inputs: one shared dynamic first axis."""
    batch = torch.export.Dim(BATCH)
    return {0: batch}, {0: batch}


def _write_onnx(model: ExportedModel, example: tuple[Tensor, Tensor], path: Path) -> None:
    outputs = output_names(model)
    names = {"input_names": list(INPUTS), "output_names": list(outputs)}
    if isinstance(model.net, TRACED_FOR_ONNX):
        with warnings.catch_warnings():
            # The exporter torch 2.14 deprecates, chosen for this model (see TRACED_FOR_ONNX); the tracer's
            # "converting a tensor to a Python value" is the buffers becoming constants, as intended.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # The opening's strided slices stay ops instead of constants: the same outputs.
            warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
            axes = {key: {0: BATCH} for key in (*INPUTS, *outputs)}
            torch.onnx.export(model, example, str(path), dynamo=False, dynamic_axes=axes, **names)
        return
    with warnings.catch_warnings(), _quiet(QUIET_LOGGERS):
        # Said of the second input's axis, which shares the first's name on purpose: both are named "batch".
        warnings.filterwarnings("ignore", "# The axis name: batch will not be used", UserWarning)
        # One file (weights inside; ONNX's 2 GB limit is far off); no progress lines.
        torch.onnx.export(
            model, example, str(path), dynamo=True, dynamic_shapes=_batch_axis(), external_data=False, verbose=False,
            **names,
        )  # fmt: skip


@contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Loggers ``names`` at WARNING for the block (their levels restored after)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _write_torchscript(model: ExportedModel, example: tuple[Tensor, Tensor], path: Path) -> None:
    with warnings.catch_warnings():
        # As in run_torchscript; and the tracer's constants, as in _write_onnx.
        warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example)
    traced.save(str(path))
