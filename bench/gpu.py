"""``python -m bench.run --gpu``: throughput on one GPU of loading, training steps and the depth stage.

    python -m bench.gpu                                 # on a GPU: about 3 minutes, estimated; prints the table
    python -m bench.gpu --results bench/RESULTS_GPU.md  # and writes it there
    python -m bench.gpu --device cpu --quick            # the same code on the CPU at tiny sizes (the tests')

Everything runs on data made here, in a temporary folder, as bench/run.py does. The rows:

1. loader only: samples/s of the DataModule's training loader, from the zips and from the decoded cache
   (``data.cache=true``) at several ``num_workers``, and from the cache held on the device (``data.cache_device``);
2. JPEG decoding: a batch's JPEGs read from its zip by the samples' member records, decoded and resized on one
   CPU core (the dataset's path) against torchvision's batched ``decode_jpeg`` on the device;
3. model only: forward + loss + backward + optimizer step of each model in conf/model/ on a batch already on
   the device, in bf16 autocast with channels_last;
4. end to end: the fastest loader of rows 1 feeding that step, and which of the two limits it;
5. the depth teacher (Depth Anything V2 Small's architecture, random weights: the GPU machine has no network):
   its forward alone, and the depth stage of ``fgbg.build.label`` (decode, forward, encode, zip write).

The run's length is bounded row by row, to stay well under 8 minutes: each timed row runs for ``Sizes.seconds``
after its warm-up (and at least ``Sizes.steps`` batches), the depth stage labels one zip of a fixed size. A row
that fails is reported as such and the run goes on. The quick run's figures only show that the code runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.io import ImageReadMode, decode_jpeg

from bench.report import Row, machine, table
from bench.run import CONF, _data_config, _say, _timed
from bench.steps import Option, Stepper
from fgbg.build.batch_zip import Settings
from fgbg.build.generation import generate
from fgbg.build.label import label_zip, survey
from fgbg.build.scene_depth import SceneDepth
from fgbg.build.sources import SampleScenes
from fgbg.build.teacher import save_untrained
from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.dataset import ZipSampleDataset
from fgbg.data.transforms import Preprocessing
from fgbg.data.workers import available_cores
from fgbg.format.names import FG_PER_ZIP
from fgbg.format.zipdir import MemberReader
from fgbg.training.module import build_module

GPU_STEP = Option("bf16-mixed, channels_last", precision="bf16-mixed", channels_last=True)
JPEG_QUALITY = 90  # conf/generate.yaml's
UNTRAINED = {"subtraction"}  # conf/model/ entries without weights: no step to time
# Both zips' samples, split by foreground and background: longer epochs than 4k/16k's, so that a loader with
# many workers is not timed mostly across epoch ends (where its pipeline drains).
STRATEGY = "gpu_bench"
STRATEGY_OVERRIDE = f"+data.strategies.{STRATEGY}={{batches:[1,2],n_bg:null}}"


@dataclass(frozen=True)
class Sizes:
    n_bg: int  # backgrounds of each of the two zips (10 foregrounds each)
    placements: int  # per foreground, flip and background
    image_size: int  # data.image_size
    batch: int  # the loading and decoding rows' batch, and the models' but those in model_batches
    model_batches: dict[str, int]  # models trained at another batch
    workers: tuple[int, ...]  # num_workers of the loading rows
    seconds: float  # least time per timed row, after its warm-up
    steps: int  # least batches or steps per timed row
    warmup: int  # untimed batches or steps before each timed row (worker start-up, kernel choice, allocations)
    teacher: str  # a key of TEACHERS
    teacher_batch: int
    label_bg: int  # backgrounds of the zip the depth stage labels: 10 foregrounds x 2 x label_bg x placements

    strategy = STRATEGY  # what bench.run._data_config reads

    def model_batch(self, model: str) -> int:
        return self.model_batches.get(model, self.batch)


def _worker_counts(cores: int) -> tuple[int, ...]:
    """0, 4, 8 and all cores but the training process's one, as far as there are cores."""
    return tuple(sorted({w for w in (0, 4, 8, cores - 1) if 0 <= w <= cores - 1}))


FULL = Sizes(
    n_bg=100, placements=20, image_size=64, batch=256,
    model_batches={"net": 64},  # 57 GFLOPs per 64x64 forward: a quarter of the others' batch
    workers=_worker_counts(available_cores()), seconds=5, steps=3, warmup=3,
    teacher="small", teacher_batch=64, label_bg=20,
)
# data.image_size 32: the smallest side UNet takes (multiples of 2 ** encoder_depth).
QUICK = Sizes(
    n_bg=10, placements=2, image_size=32, batch=4, model_batches={}, workers=(0, 1), seconds=0, steps=1,
    warmup=2, teacher="tiny", teacher_batch=4, label_bg=2,
)

# Depth Anything V2 Small as its hub config gives it (24.8M parameters, input 518), and a tiny one for
# quick runs: (Dinov2 backbone, DPT neck and head, input side).
TEACHERS = {
    "small": (
        dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, out_indices=[9, 10, 11, 12]),
        dict(
            reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64, head_hidden_size=32
        ),
        518,
    ),
    "tiny": (
        dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, out_indices=[1, 2, 3, 4]),
        dict(reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8, head_hidden_size=4),
        28,
    ),
}


# Timing --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(step: Callable[[], int], sizes: Sizes, device: torch.device) -> float:
    """Items per second of ``step()`` (it returns the items it handled), timed for at least ``sizes.seconds``
    and ``sizes.steps`` calls after ``sizes.warmup`` untimed ones. The device's queue is drained before the
    clock starts and before it is read: its work is asynchronous."""
    for _ in range(sizes.warmup):
        step()
    _sync(device)
    done = calls = 0
    start = time.perf_counter()
    while calls < sizes.steps or time.perf_counter() - start < sizes.seconds:
        done, calls = done + step(), calls + 1
    _sync(device)
    return done / (time.perf_counter() - start)


def _endless(loader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def _guarded(rows: list[Row], measure: str, unit: str, measured: Callable[[], tuple[float, str]]) -> float | None:
    """Append the row of ``measured()`` (its value and note) and return the value. A row that fails is
    reported and the run goes on: one run on a lent GPU must give every other row."""
    _say(f"{measure} ...")
    try:
        value, note = measured()
    except Exception as error:
        _say(f"  failed: {error!r}")
        rows.append(Row(measure, unit, None, None, note=f"failed: {error!r}"))
        return None
    rows.append(Row(measure, unit, None, value, note=note))
    return value


def _section(rows: list[Row], title: str, run: Callable[[], list | None]) -> list | None:
    """``run()``, or ``[]`` and a row that says why when it fails outside its guarded rows (preparing them)."""
    try:
        return run()
    except Exception as error:
        _say(f"{title}: failed: {error!r}")
        rows.append(Row(title, "", None, None, note=f"failed: {error!r}"))
        return []


# Data ----------------------------------------------------------------------------------------------


def _settings(n_bg: int, n_fg: int, sizes: Sizes) -> Settings:
    return Settings(n_bg=n_bg, n_fg=n_fg, placements=sizes.placements, seed=0, jpeg_quality=JPEG_QUALITY)


def make_data(sizes: Sizes, work: Path) -> tuple[Path, Path]:
    """Two zips with scene depth (the loading and training rows'), and one zip without depth for the depth
    stage to label; their folder and that zip."""
    data_dir = work / "data"
    settings = _settings(sizes.n_bg, 2 * FG_PER_ZIP, sizes)
    scenes = SampleScenes(0)
    seconds = _timed(lambda: generate(scenes, SceneDepth(), data_dir, settings, workers=2, show_progress=False))
    _say(f"data: {2 * settings.composites_per_batch(1):,} composites with depth in {seconds:.1f} s")
    unlabelled = _settings(sizes.label_bg, FG_PER_ZIP, sizes)
    [to_label] = generate(scenes, None, work / "unlabelled", unlabelled, workers=1, show_progress=False)
    return data_dir, to_label


def _config(data_dir: Path, sizes: Sizes, *overrides: str):
    """train.py's composed config over the bench's data, at the bench's image size and batch."""
    ours = (STRATEGY_OVERRIDE, f"data.image_size={sizes.image_size}", f"data.batch_size={sizes.batch}")
    return _data_config(data_dir, sizes, *ours, *overrides)


def _datamodule(cfg):
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    return datamodule


# 1. Loader only ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loader:
    """A loading setting the rows timed: its ``data.*`` overrides and its loader-only samples/s."""

    name: str
    overrides: tuple[str, ...]
    rate: float


def _loader_rate(data_dir: Path, sizes: Sizes, device: torch.device, overrides: tuple[str, ...]) -> tuple[float, int]:
    """Samples/s of the training loader under ``overrides``, batches as it yields them (on the device only
    where the loader puts them there); and the training samples it reads."""
    datamodule = _datamodule(_config(data_dir, sizes, *overrides))
    batches = _endless(datamodule.train_dataloader())
    return _throughput(lambda: len(next(batches)[BACKGROUND]), sizes, device), len(datamodule.parts["train"])


def _cache_build(data_dir: Path, sizes: Sizes) -> tuple[float, str]:
    """Samples/s of the DataModule's setup that builds the decoded cache of all the strategy's samples."""
    datamodule = instantiate(_config(data_dir, sizes, "data.cache=true").data)
    seconds = _timed(datamodule.setup)
    n = sum(len(part) for part in datamodule.parts.values())
    return n / seconds, f"{n:,} samples (every part) indexed, decoded into uint8 arrays on every core: {seconds:.1f} s"


def bench_loading(data_dir: Path, sizes: Sizes, device: torch.device, rows: list[Row]) -> list[Loader]:
    """Rows 1; returns the settings that ran, for the end-to-end rows."""
    ran: list[Loader] = []

    def row(measure: str, name: str, overrides: tuple[str, ...], note: str) -> None:
        def measured() -> tuple[float, str]:
            rate, n = _loader_rate(data_dir, sizes, device, overrides)
            return rate, f"batch {sizes.batch}, {n:,} training samples at {sizes.image_size}x{sizes.image_size}; {note}"

        rate = _guarded(rows, measure, "samples/s", measured)
        if rate is not None:
            ran.append(Loader(name, overrides, rate))

    for workers in sizes.workers:
        name = f"zips, num_workers {workers}"
        row(f"1 Loader only: {name}", name, (f"data.num_workers={workers}",), "decoded from the zips (simplejpeg)")
    _guarded(rows, "1b Decoded cache: built once", "samples/s", lambda: _cache_build(data_dir, sizes))
    for workers in sizes.workers:
        name = f"decoded cache, num_workers {workers}"
        row(f"1c Loader only: {name}", name, ("data.cache=true", f"data.num_workers={workers}"), "memory-mapped uint8")
    name = f"decoded cache on {device.type}, num_workers 0"
    overrides = ("data.cache=true", f"data.cache_device={device}", "data.num_workers=0")
    row(f"1d Loader only: {name}", name, overrides, "the cache's arrays moved to the device once; batches made there")
    return ran


# 2. JPEG decoding ----------------------------------------------------------------------------------

# The per-composite images of a sample and their places in its member records (SAMPLE_IMAGES' order:
# background, composite, mask, depth). Backgrounds are left out: the dataset decodes each once per process.
PER_COMPOSITE = {COMPOSITE: 1, MASK: 2, DEPTH: 3}


class JpegBatches:
    """The per-composite JPEG bytes of consecutive samples of ``dataset``, read from their zips by the samples'
    member records as the dataset reads them (``MemberReader``: pread, CRC checked); it cycles over the samples."""

    def __init__(self, dataset: ZipSampleDataset, batch: int):
        self.samples, self.batch, self.start = dataset.samples, batch, 0
        self.readers = {b: MemberReader(path) for b, path in dataset.zips.items()}

    def __call__(self) -> dict[str, list[bytes]]:
        rows = self.samples.take(range(self.start, self.start + self.batch), mode="wrap")
        self.start = (self.start + self.batch) % len(self.samples)
        return {
            key: [self.readers[int(s["batch"])].read(*s["members"][image].item()) for s in rows]
            for key, image in PER_COMPOSITE.items()
        }


def cpu_decoded(preprocessing: Preprocessing, jpegs: dict[str, list[bytes]]) -> dict[str, np.ndarray]:
    """The dataset's decode: simplejpeg at reduced (DCT) scale, then the batch resized: uint8 ``(B, S, S[, 3])``."""
    decoders = {COMPOSITE: preprocessing.image, MASK: preprocessing.target, DEPTH: preprocessing.target}
    return preprocessing.resized({key: np.stack([decoders[key](d) for d in data]) for key, data in jpegs.items()})


def device_decoded(
    preprocessing: Preprocessing, jpegs: dict[str, list[bytes]], device: torch.device
) -> dict[str, torch.Tensor]:
    """torchvision's batched decode on ``device`` (nvJPEG on a GPU) at full size, then an antialiased bilinear
    resize there: uint8 ``(B, C, S, S)``, gray but for RGB composites (``grayscale`` false)."""
    side = preprocessing.image_size
    out = {}
    for key, data in jpegs.items():
        mode = ImageReadMode.RGB if key == COMPOSITE and not preprocessing.grayscale else ImageReadMode.GRAY
        # bytearray: torch.frombuffer warns on read-only bytes.
        encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
        full = torch.stack(decode_jpeg(encoded, mode=mode, device=device)).float()
        out[key] = F.interpolate(full, size=(side, side), mode="bilinear", antialias=True).round_().to(torch.uint8)
    return out


def bench_jpeg(data_dir: Path, sizes: Sizes, device: torch.device, rows: list[Row]) -> None:
    """Rows 2: the same training samples' JPEGs read, then decoded by each path to uint8 at data.image_size;
    one thread each (the CPU path scales with loader workers, rows 1)."""
    datamodule = _datamodule(_config(data_dir, sizes))
    preprocessing, jpegs = datamodule.preprocessing, JpegBatches(datamodule.parts["train"], sizes.batch)
    cpu = torch.device("cpu")
    note = f"batch {sizes.batch}, 3 JPEGs per sample (composite, mask, depth: backgrounds are decoded once per process)"
    paths = (
        ("2 JPEG read only: pread + CRC check", cpu, jpegs, note),
        (
            "2a JPEG decode on the CPU: read + simplejpeg at DCT scale + resize, 1 core", cpu,
            lambda: cpu_decoded(preprocessing, jpegs()), f"{note}; the dataset's own path",
        ),
        (
            f"2b JPEG decode on {device.type}: read + torchvision decode_jpeg (batched) + resize", device,
            lambda: device_decoded(preprocessing, jpegs(), device),
            f"{note}; decoded at full size (no DCT scaling), resized on the device",
        ),
    )
    for measure, on, decoded, about in paths:
        _guarded(rows, measure, "samples/s", lambda: (_throughput(lambda: len(decoded()[COMPOSITE]), sizes, on), about))


# 3, 4. Training steps ------------------------------------------------------------------------------


def _training_step(module, device: torch.device) -> Callable[[dict], int]:
    """train.py's step in bf16-mixed precision (the GPU default) with channels_last weights (:class:`Stepper`);
    the step returns the batch's samples."""
    stepper = Stepper(module, GPU_STEP, device)

    def step(batch: dict) -> int:
        stepper.step(batch)
        return len(batch[BACKGROUND])

    return step


def synthetic_batch(batch: int, side: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of the batch contract's shapes and ranges, random, on ``device``."""

    def rand(channels: int) -> torch.Tensor:
        return torch.rand(batch, channels, side, side, device=device)

    return {BACKGROUND: rand(3), COMPOSITE: rand(3), MASK: (rand(1) > 0.5).float(), DEPTH: rand(1)}


def _peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f"; peak device memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"


def _models() -> list[str]:
    return [p.stem for p in sorted((CONF / "model").glob("*.yaml")) if p.stem not in UNTRAINED]


def bench_model(name: str, data_dir: Path, sizes: Sizes, device: torch.device, best: Loader | None) -> list[Row]:
    """Rows 3 and 4 of model ``name``: its step on a batch already on the device, then fed by ``best``."""
    batch = sizes.model_batch(name)
    title = f"{name} (batch {batch}, {sizes.image_size}x{sizes.image_size}, bf16, channels_last)"
    rows: list[Row] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = _config(data_dir, sizes, f"model={name}", f"data.batch_size={batch}", *(best.overrides if best else ()))
    step = _training_step(build_module(cfg), device)

    def model_only() -> tuple[float, str]:
        synthetic = synthetic_batch(batch, sizes.image_size, device)
        rate = _throughput(lambda: step(synthetic), sizes, device)
        optimizer = cfg.optimizer._target_.rsplit(".", 1)[-1]
        return rate, f"forward + loss + backward + {optimizer} step{_peak_memory(device)}"

    model = _guarded(rows, f"3 Model only: {title}", "samples/s", model_only)

    def end_to_end() -> tuple[float, str]:
        if best is None or model is None:
            raise RuntimeError("needs a loader of rows 1 and this model's row 3")
        batches = _endless(_datamodule(cfg).train_dataloader())
        rate = _throughput(lambda: step(next(batches)), sizes, device)
        limit = "loader" if best.rate < model else "model"
        return rate, (
            f"limit: {limit} (loader only {best.rate:,.0f}/s at batch {sizes.batch}, model only {model:,.0f}/s); "
            f"end to end reaches {rate / min(best.rate, model):.0%} of the lower"
        )

    _guarded(rows, f"4 End to end: {best.name if best else 'the best loader'} feeding {name}", "samples/s", end_to_end)
    return rows


def bench_training(data_dir: Path, sizes: Sizes, device: torch.device, loaders: list[Loader], rows: list[Row]) -> None:
    """Rows 3 (every model) then rows 4 (every model), fed by the fastest loader of rows 1."""
    best = max(loaders, key=lambda loader: loader.rate, default=None)
    model_rows, end_to_end_rows = [], []
    for name in _models():
        title = f"3 Model only: {name}"
        measured = _section(model_rows, title, lambda: bench_model(name, data_dir, sizes, device, best))
        model_rows.extend(measured[:1])
        end_to_end_rows.extend(measured[1:])
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next model's peak memory is its own
    rows.extend(model_rows + end_to_end_rows)


# 5. The depth stage --------------------------------------------------------------------------------


def save_teacher(folder: Path, kind: str) -> Path:
    """A randomly initialised Depth Anything of ``TEACHERS[kind]``'s architecture, for ``Teacher(model=folder)``."""
    backbone, head, side = TEACHERS[kind]
    return save_untrained(folder, backbone, head, side)


def bench_depth_stage(to_label: Path, sizes: Sizes, device: torch.device, work: Path, rows: list[Row]) -> None:
    """Rows 5: the teacher (conf/depth/hub.yaml's settings) on the device, alone and in ``label_zip``."""
    folder = save_teacher(work / "teacher", sizes.teacher)
    depth = OmegaConf.load(CONF / "depth" / "hub.yaml")
    teacher = instantiate(
        depth, model=str(folder), device=str(device), batch_size=sizes.teacher_batch, allow_download=False
    )
    teacher.load()  # runs one batch: a warm-up
    dtype = str(teacher.dtype).removeprefix("torch.")
    what = (
        f"Depth Anything V2 {sizes.teacher} architecture, random weights, input {teacher.size}, {dtype}, "
        f"batch {teacher.batch_size}"
    )

    def forward_only() -> tuple[float, str]:
        pixels = torch.rand(teacher.batch_size, 3, teacher.size, teacher.size, device=teacher.device).to(teacher.dtype)

        def forward() -> int:
            teacher.raw_prediction(pixels)
            return len(pixels)

        with torch.inference_mode():
            return _throughput(forward, sizes, device), f"{what}; normalised pixels already on the device"

    def stage() -> tuple[float, str]:
        _, _, n = survey(to_label)
        seconds = _timed(lambda: label_zip(to_label, teacher, JPEG_QUALITY, dest=work / "labelled.zip"))
        return n / seconds, f"label_zip of one zip of {n:,} composites ({os.cpu_count()} threads): {what}"

    _guarded(rows, "5 Depth teacher: forward only", "images/s", forward_only)
    _guarded(rows, "5a Depth stage end to end: read + decode + teacher + encode + zip write", "images/s", stage)


# Run -----------------------------------------------------------------------------------------------


def _device(name: str) -> torch.device:
    """``name`` as a device; exits with one line when it is a CUDA device and there is none."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"bench.gpu: --device {name} but no CUDA device is available; "
            "`--device cpu --quick` runs the same code on the CPU"
        )
    return device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device to measure (cpu: a sanity run)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a tiny teacher: a sanity run")
    parser.add_argument("--results", type=Path, help="also write the table here (default: print only)")
    parser.add_argument("--work", type=Path, help="folder for the data made (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    device = _device(args.device)
    sizes = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="fgbg-bench-gpu-", dir=args.work))
    started = time.perf_counter()
    try:
        rows: list[Row] = []
        data_dir, to_label = make_data(sizes, work)
        loaders = _section(rows, "1 Loader only", lambda: bench_loading(data_dir, sizes, device, rows))
        _section(rows, "2 JPEG decode", lambda: bench_jpeg(data_dir, sizes, device, rows))
        bench_training(data_dir, sizes, device, loaders, rows)
        _section(rows, "5 Depth stage", lambda: bench_depth_stage(to_label, sizes, device, work, rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    took = time.perf_counter() - started
    command = "python -m bench.gpu" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    text = f"Command: `{command}` ({took:.0f} s)\n\nMachine: {machine()}\n\n{table(rows)}\n"
    print(text)
    _say(f"total: {took:.0f} s")
    if args.results is not None:
        args.results.write_text(f"# GPU bench: results of the last run\n\n{text}")
        _say(f"wrote {args.results}")


if __name__ == "__main__":
    main()
