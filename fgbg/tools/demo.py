"""``demo.py``'s body: a local web page that shows a checkpoint's mask and depth for a background and a composite.

    pip install gradio==6.31.0    # an optional dependency: the rest of the project runs without it
    python demo.py ckpt_path=outputs/train/<run>/checkpoints/last.ckpt    (then open http://127.0.0.1:7860)

Upload a background and a composite of the same size, or pick one of the example pairs (copied from the first
sample zip of ``examples_dir`` into the run folder), and the mask and depth come side by side at the composite's
size, predicted as ``predict.py`` predicts them (:func:`fgbg.tasks.predict.predict_pair`). A checkpoint without
depth shows the mask alone. One pair at a time is milliseconds on a CPU, where the demo runs.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from fgbg.errors import FgbgError, check_int
from fgbg.format.names import BG, FG_BG, SampleId, composite_member, images_by_category, parse_member, source_member
from fgbg.format.zips import NoZipsError, batch_zips
from fgbg.tasks.predict import PredictionError, load_predictor, predict_pair
from fgbg.training.module import MaskDepthModule

log = logging.getLogger(__name__)

GRADIO = "gradio==6.31.0"  # the version the demo is tested with (tests/test_demo.py)
API_NAME = "predict"  # the page's endpoint: gradio_client's Client(url).predict(bg, composite, api_name="/predict")


class DemoError(FgbgError, RuntimeError):
    """The demo cannot start (Gradio missing); the message says what to install."""


def demo(ckpt_path: str | Path, examples_dir: str | Path, examples: int, out: str | Path, host: str, port: int | None):
    """Serve the page for checkpoint ``ckpt_path`` on ``host``:``port`` (None: the first free one from 7860) until
    interrupted, with up to ``examples`` example pairs from ``examples_dir``'s zips copied to ``<out>/examples``.

    Raises :class:`DemoError` without Gradio, and what :func:`~fgbg.tasks.predict.load_predictor` raises for a
    checkpoint it cannot use; all before the page starts.
    """
    import_gradio()  # before the checkpoint loads: its absence is the likelier problem
    module = load_predictor(ckpt_path).eval()
    pairs = example_pairs(examples_dir, examples, Path(out) / "examples")
    page = build_demo(module, pairs, title=f"fgbg: {Path(ckpt_path).name} ({type(module.net).__name__})")
    log.info("demo of %s with %d example pairs; Ctrl-C stops it", ckpt_path, len(pairs))
    # Gradio checks its own page at start through httpx, which logs each request at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    page.launch(server_name=host, server_port=port, allowed_paths=[str(Path(out) / "examples")])


def import_gradio():
    """The ``gradio`` module, or :class:`DemoError` saying how to install it."""
    try:
        import gradio
    except ImportError as error:
        raise DemoError(f"the demo needs Gradio, an optional dependency: pip install {GRADIO}") from error
    return gradio


def example_pairs(data_dir: str | Path, count: int, out: str | Path) -> list[tuple[Path, Path]]:
    """Up to ``count`` ``(background, composite)`` JPEG files copied from ``data_dir``'s first batch zip into
    ``out`` (``<fg>_<bg>_<flip>_<k>_background.jpg``, ``..._composite.jpg``): the first composites by id whose
    background and foreground no earlier pair showed. None (logged) when ``data_dir`` holds no batch zips."""
    count = check_int("examples", count, 0)
    try:
        first = next(iter(batch_zips(data_dir).values()))
    except NoZipsError as error:
        log.info("no example pairs: %s", error)
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    with zipfile.ZipFile(first) as zf:
        for sample in _varied_samples(images_by_category(zf.namelist())[FG_BG], count):
            paths = out / f"{sample.stem()}_background.jpg", out / f"{sample.stem()}_composite.jpg"
            members = source_member(BG, sample.bg), composite_member(FG_BG, sample)
            for path, member in zip(paths, members):
                path.write_bytes(zf.read(member))
            pairs.append(paths)
    return pairs


def build_demo(module: MaskDepthModule, examples: list[tuple[Path, Path]], title: str = "fgbg"):
    """The page (a ``gradio.Blocks``, not launched): two image inputs, a button, the mask and (with depth) the
    depth side by side, and ``examples`` to pick from. Its endpoint ``/predict`` takes (background, composite)
    and returns the mask (and the depth), PNGs at the composite's size."""
    gr = import_gradio()
    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.Markdown(f"## {title}\nA background and a composite of the same size: the predicted mask and depth.")
        with gr.Row():
            background = gr.Image(type="pil", label="background (the plate)")
            composite = gr.Image(type="pil", label="composite (a foreground on that background)")
        button = gr.Button("Predict", variant="primary")
        with gr.Row():
            outputs = [gr.Image(format="png", label="mask (white = foreground)", interactive=False)]
            if module.with_depth:
                outputs.append(gr.Image(format="png", label="depth (brighter = nearer)", interactive=False))
        if not module.with_depth:
            gr.Markdown("This checkpoint predicts no depth: the mask alone.")
        if examples:
            gr.Examples([[str(bg), str(fg_bg)] for bg, fg_bg in examples], inputs=[background, composite])
        button.click(predictor(module), inputs=[background, composite], outputs=outputs, api_name=API_NAME)
    return page


def predictor(module: MaskDepthModule):
    """The page's function: PIL ``background``, ``composite`` -> 8-bit ``(H, W)`` mask (and depth) arrays;
    a missing image or a size mismatch is said on the page (``gradio.Error``)."""
    gr = import_gradio()

    def predict(background, composite) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if background is None or composite is None:
            raise gr.Error("Upload a background and a composite, or pick an example.")
        try:
            mask, depth = predict_pair(module, background, composite)
        except PredictionError as error:
            raise gr.Error(str(error)) from error
        return (mask, depth) if module.with_depth else mask

    return predict


def _varied_samples(members: list[str], count: int) -> list[SampleId]:
    """The first ``count`` composites (by id) of ``members`` whose background and foreground are both new."""
    chosen, backgrounds, foregrounds = [], set(), set()
    for sample in sorted(parse_member(member)[1] for member in members):
        if len(chosen) == count:
            break
        if sample.bg not in backgrounds and sample.fg not in foregrounds:
            chosen.append(sample)
            backgrounds.add(sample.bg)
            foregrounds.add(sample.fg)
    return chosen
