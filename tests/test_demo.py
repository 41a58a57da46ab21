import socket
import sys

import numpy as np
import pytest
from PIL import Image

import demo as demo_script
from fgbg.errors import ConfigError
from fgbg.tasks.predict import load_predictor, predict, predict_pair
from fgbg.tools.demo import API_NAME, DemoError, build_demo, example_pairs, import_gradio, predictor
from tests.helpers.configs import compose_config
from tests.helpers.paths import ROOT

gr = pytest.importorskip("gradio", reason="the demo's optional dependency (pip install gradio)")
CKPT = ROOT / "tests" / "data" / "c826fc5_convgen.ckpt"  # 32x32 gray, with depth
WIDTH, HEIGHT = 100, 70  # not the checkpoint's size: predictions come back at the input's


@pytest.fixture(scope="module")
def module():
    return load_predictor(CKPT).eval()


@pytest.fixture
def gradio_dirs(tmp_path, monkeypatch):
    """Gradio's upload and example cache under this test's folder, not /tmp/gradio."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture
def pair(small_dataset, tmp_path):
    """An example pair of the sample data, resized to WIDTH x HEIGHT: (background, composite) paths."""
    (bg, fg_bg), = example_pairs(small_dataset, 1, tmp_path / "examples")
    paths = tmp_path / "bg.png", tmp_path / "fg_bg.png"
    for source, path in zip((bg, fg_bg), paths):
        Image.open(source).resize((WIDTH, HEIGHT)).save(path)
    return paths


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_page_answers_a_request_with_a_mask_and_depth_of_the_inputs_size(module, pair, tmp_path, gradio_dirs):
    from gradio_client import Client, handle_file

    page = build_demo(module, [])
    page.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(page.local_url, verbose=False, download_files=str(tmp_path / "client"))
        mask_file, depth_file = client.predict(*(handle_file(str(p)) for p in pair), api_name=f"/{API_NAME}")
    finally:
        page.close()
    mask, depth = (np.asarray(Image.open(path)) for path in (mask_file, depth_file))
    assert mask.shape == depth.shape == (HEIGHT, WIDTH)
    # What predict.py's function makes of the same images (PNGs on the way: lossless).
    expected_mask, expected_depth = predict_pair(module, *(Image.open(p).convert("RGB") for p in pair))
    assert np.array_equal(mask, expected_mask) and np.array_equal(depth, expected_depth)
    assert set(np.unique(mask)) <= {0, 255}


def test_predict_pair_predicts_as_predict_py_does(module, pair, tmp_path):
    mask, depth = predict_pair(module, *(Image.open(p) for p in pair))
    predict(CKPT, pair[0], pair[1], tmp_path / "out", device="cpu")
    assert np.array_equal(mask, np.asarray(Image.open(tmp_path / "out" / "fg_bg_mask.png")))
    assert np.array_equal(depth, np.asarray(Image.open(tmp_path / "out" / "fg_bg_depth.png")))


def test_the_page_says_what_is_wrong_and_shows_the_mask_alone_without_depth(module, pair):
    predict = predictor(module)
    background, composite = (Image.open(p) for p in pair)
    with pytest.raises(gr.Error, match="Upload a background and a composite"):
        predict(None, composite)
    with pytest.raises(gr.Error, match="100x70 but the background is 50x35"):
        predict(background.resize((50, 35)), composite)
    module.with_depth = False  # as a mask-only checkpoint loads
    try:
        mask = predictor(module)(background, composite)
        assert isinstance(mask, np.ndarray) and mask.shape == (HEIGHT, WIDTH)
        with build_demo(module, []) as page:
            pass
        assert [type(c).__name__ for c in page.blocks.values()].count("Image") == 3  # 2 inputs, the mask
    finally:
        module.with_depth = True


def test_example_pairs_come_from_the_first_zip_each_of_a_new_background_and_foreground(small_dataset, tmp_path):
    pairs = example_pairs(small_dataset, 3, tmp_path / "ex")
    assert len(pairs) == 3
    stems = [bg.name.removesuffix("_background.jpg") for bg, _ in pairs]
    assert [fg_bg.name for _, fg_bg in pairs] == [f"{stem}_composite.jpg" for stem in stems]
    fgs, bgs = zip(*(stem.split("_")[:2] for stem in stems))
    assert len(set(fgs)) == len(set(bgs)) == 3
    for bg, fg_bg in pairs:
        assert Image.open(bg).size == Image.open(fg_bg).size == (160, 160)
    assert example_pairs(tmp_path / "nothing", 3, tmp_path / "none") == []  # no zips: upload only
    with pytest.raises(ConfigError, match="examples"):
        example_pairs(small_dataset, -1, tmp_path / "ex")


def test_without_gradio_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio then raises ImportError
    with pytest.raises(DemoError, match=r"pip install gradio==\d"):
        import_gradio()


def test_demo_py_serves_with_examples_in_the_run_folder(small_dataset, tmp_path, monkeypatch, gradio_dirs):
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda page, **kwargs: launched.update(kwargs, page=page))
    run = tmp_path / "run"
    cfg = compose_config("demo", [f"ckpt_path={CKPT}", f"examples_dir={small_dataset}", f"paths.output_dir={run}"])
    assert (cfg.host, cfg.port, cfg.examples) == ("127.0.0.1", None, 4)
    demo_script.main(cfg)
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] is None
    assert len(list((run / "examples").glob("*_composite.jpg"))) == 4
    assert isinstance(launched["page"], gr.Blocks)
