"""``make bench``: the seed's approach and ours, side by side in one run on one machine, with ratios.

    python -m bench.run            # about 8 minutes on 2 cores; writes bench/RESULTS.md
    python -m bench.run --quick    # a sanity run in about a minute; prints only

Everything runs on data made here, in a temporary folder: the generation rows make the zips that the
loading and training rows read. See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, default_collate

import fgbg.run_dirs  # noqa: F401  (registers the resolvers the composed configs use)
from bench.cpu_options import option_rows
from bench.report import Row, machine, table
from bench.seed_baselines import MasterDataset, generate_fg_bg_images_jpg, map_names, seed_transform
from bench.steps import Option, Stepper
from fgbg.build.batch_zip import Settings
from fgbg.build.compose import mask_on_black, paste, placements
from fgbg.build.generation import generate
from fgbg.build.scene_depth import SceneDepth
from fgbg.build.sources import SampleScenes
from fgbg.data.batch import BACKGROUND, KEYS, TARGETS
from fgbg.data.index import sample_id, select
from fgbg.data.transforms import decode
from fgbg.format.names import (
    BG,
    BG_SIZE,
    DEPTH,
    FG,
    FG_BG,
    FG_PER_ZIP,
    MASK,
    MASK_BLACK,
    SampleId,
    composite_member,
    n_batches,
    source_member,
    zip_name,
)
from fgbg.format.writer import atomic_zip
from fgbg.hardware import use_channels_last
from fgbg.tasks.calibrated import fitted_without_gradients
from fgbg.training.module import build_module

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
SEED_QUALITY = 75  # PIL's default JPEG quality, which the seed's loop saved with
BATCH_SIZE = 16  # the seed's DataLoader
PLACEMENTS = Settings().placements  # conf/generate.yaml's, held equal by a test
WORKERS = (0, 1, 2)  # the loading rows' loader worker counts
SEED_ROOT = "/content/gdrive/My Drive/MASK1/batch_images1"  # the seed's folder, for names of its length


@dataclass(frozen=True)
class Sizes:
    n_bg: int  # backgrounds of the generation rows (foregrounds: one zip of 10 per core)
    map_fgs: int  # foregrounds of the 10 that the seed's mapping scan covers (the rest extrapolated)
    strategy: str  # the loading rows' strategy (conf/data/default.yaml)
    load_samples: int  # samples timed per loading row
    train_seconds: float  # least time per training row
    train_steps: int  # least steps per training row (after one untimed warm-up step when > 1)
    seed_training: bool  # whether the training rows also run the seed's loader
    option_seconds: float | None  # least time per step option of rows 5 (None: no rows 5)


FULL = Sizes(
    n_bg=100, map_fgs=10, strategy="16k", load_samples=4000, train_seconds=10, train_steps=2, seed_training=True,
    option_seconds=6,
)
QUICK = Sizes(
    n_bg=10, map_fgs=1, strategy="4k", load_samples=400, train_seconds=0, train_steps=1, seed_training=False,
    option_seconds=None,
)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# 1. Generation ------------------------------------------------------------------------------------


def _extract(zip_path: Path, out: Path, folders: tuple[str, ...]) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(out, [m for m in zf.namelist() if m.split("/")[0] in folders])


def _codec_floor(quality: int, work: Path, n: int = 2000) -> float:
    """Seconds per composite of the unavoidable work, on one core: paste, the mask on black, two JPEG
    encodes, two zip members (the library's own functions, without generation's bookkeeping)."""
    scenes = SampleScenes(0).load(1, 1)
    bg, rgba = scenes.bg_rgb[0], scenes.fg_rgba[0]
    mask, rgb = rgba[..., 3] > 0, rgba[..., :3]
    offsets = placements(0, 1, 1, 0, PLACEMENTS)
    with atomic_zip(work / "floor.zip", quality) as writer:
        start = time.perf_counter()
        for i in range(n):
            x, y = offsets[i % len(offsets)]
            writer.write_image(f"{FG_BG}/{i}.jpg", paste(bg, rgb, mask, x, y))
            writer.write_image(f"{MASK_BLACK}/{i}.jpg", mask_on_black(mask, x, y, BG_SIZE))
        seconds = time.perf_counter() - start
    return seconds / n


def bench_generation(sizes: Sizes, cores: int, work: Path, rows: list[Row]) -> Path:
    """Rows 1; returns the folder of the zips made as shipped (with depth), which the later rows read."""
    # A zip per core, and at least two: the 4k and 16k strategies validate and test on zip 2's foregrounds.
    n_fg = FG_PER_ZIP * max(cores, 2)
    like = Settings(n_bg=sizes.n_bg, n_fg=n_fg, placements=PLACEMENTS, seed=0, jpeg_quality=SEED_QUALITY)
    count, per_zip = n_fg * 2 * sizes.n_bg * PLACEMENTS, like.composites_per_batch(1)
    _say(f"generation: {count:,} composites, ours on {cores} processes ...")
    ours = _timed(lambda: generate(SampleScenes(0), None, work / "ours", like, workers=cores, show_progress=False))

    src, out = work / "seed_src", work / "seed_out"
    for batch in range(1, cores + 1):
        _extract(work / "ours" / zip_name(batch), src, (BG, FG, MASK))
    for folder in (FG_BG, MASK_BLACK):
        (out / folder).mkdir(parents=True)
    _say("generation: the seed's loop ...")
    seed = _timed(lambda: generate_fg_bg_images_jpg(*(str(src / f) for f in (FG, BG, MASK)), *(str(out / f) for f in (FG_BG, MASK_BLACK))))
    made = sum(1 for _ in (out / FG_BG).iterdir())
    assert made == count, f"the seed's loop made {made} composites, expected {count}"
    rows.append(
        Row(
            "1 Generation, composites + masks (JPEG q75, no depth)",
            "composites/s",
            count / seed,
            count / ours,
            3.5,
            f"{count:,} composites (2 JPEGs each), {per_zip:,} per zip (the dataset's zips hold "
            f"{Settings().composites_per_batch(1):,}); seed: PIL paste + save to loose files, 1 process; "
            f"ours: generate(depth=None) into stored zips, {cores} processes",
        )
    )
    floor = _codec_floor(SEED_QUALITY, work)
    limit = cores / floor
    rows.append(
        Row(
            "1a Generation limit: paste + 2 encodes + 2 zip members, x cores",
            "composites/s",
            None,
            limit,
            note=f"{floor * 1e6:.0f} us per composite on one core; ours above reaches {count / ours / limit:.0%} of it "
            "(the rest: rendering the scenes, starting the processes, each zip's directory and fsync)",
        )
    )

    shipped = replace(like, jpeg_quality=OmegaConf.load(CONF / "generate.yaml").jpeg_quality)
    _say("generation: ours as shipped (with depth) ...")
    with_depth = _timed(lambda: generate(SampleScenes(0), SceneDepth(), work / "data", shipped, workers=cores, show_progress=False))
    rows.append(
        Row(
            f"1b Generation as shipped: + exact depth (JPEG q{shipped.jpeg_quality})",
            "composites/s",
            None,
            count / with_depth,
            note="3 JPEGs per composite; for information: the seed's loop made no depth (its depth came from a model, later)",
        )
    )
    return work / "data"


# 2. Mapping ---------------------------------------------------------------------------------------


def bench_mapping(sizes: Sizes, work: Path, rows: list[Row]) -> None:
    """Row 2: one batch's 40,000 names (10 fg x 100 bg x 2 x 20) -> samples."""
    ids = [SampleId(fg, bg, flip, k) for fg in range(1, 11) for bg in range(1, 101) for flip in (0, 1) for k in range(1, 21)]
    # The seed listed files in directory order; the order does not change the scan's work.
    ids = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))]
    listed = {c: [f"{SEED_ROOT}/{composite_member(c, s)}" for s in ids] for c in (FG_BG, MASK_BLACK, DEPTH)}
    fg_names = [f"{SEED_ROOT}/{source_member(FG, fg)}" for fg in range(1, 11)]
    bg_names = [f"{SEED_ROOT}/{source_member(BG, bg)}" for bg in range(1, 101)]

    names_dir = work / "names"
    names_dir.mkdir()
    with atomic_zip(names_dir / zip_name(1), SEED_QUALITY) as writer:  # names only: the index reads no image
        for fg in range(1, 11):
            writer.write_bytes(source_member(FG, fg), b"")
            writer.write_bytes(source_member(MASK, fg), b"")
        for bg in range(1, 101):
            writer.write_bytes(source_member(BG, bg), b"")
        for s in ids:
            for c in (FG_BG, MASK_BLACK, DEPTH):
                writer.write_bytes(composite_member(c, s), b"")
    strategies = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "default.yaml").strategies)
    found = []
    ours = min(_timed(lambda: found.append(select(names_dir, "40k", strategies))) for _ in range(3))
    assert len(found[0][1]) == len(ids)

    _say(f"mapping: the seed's scan over {sizes.map_fgs} of 10 foregrounds ...")
    mapped = {}
    scan = _timed(lambda: mapped.update(map_names(fg_names[: sizes.map_fgs], bg_names, listed[MASK_BLACK], listed[DEPTH], listed[FG_BG])))
    assert len(mapped["fg_bg"]) == len(mapped["mask"]) == len(mapped["depth"]) == len(ids) * sizes.map_fgs // 10
    seed = scan * 10 / sizes.map_fgs
    scope = "" if sizes.map_fgs == 10 else f" (measured on {sizes.map_fgs} of the 10 foregrounds, x{10 // sizes.map_fgs}: the scan is linear in them)"
    rows.append(
        Row(
            "2 Mapping one batch: 40,000 names -> samples",
            "s per batch",
            seed,
            ours,
            100,
            f"seed: nested startswith scan, its print calls dropped{scope}; ours: index_zip + select on a zip of "
            "the same names (best of 3)",
            higher_is_better=False,
        )
    )


# 3. Loading ---------------------------------------------------------------------------------------


def _data_config(data_dir: Path, sizes: Sizes, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"data.data_dir={data_dir}", f"data.strategy={sizes.strategy}", f"data.batch_size={BATCH_SIZE}", *overrides],
        )
    return cfg


def _rate(loader: DataLoader, n: int, warmup: int = 2) -> float:
    """Samples per second of ``loader`` over at least ``n`` samples, after ``warmup`` batches (worker start-up)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    done, start = 0, time.perf_counter()
    while done < n:
        try:
            done += len(next(it)[BACKGROUND])
        except StopIteration:
            it = iter(loader)
    return done / (time.perf_counter() - start)


def _seed_dataset(data_dir: Path, datamodule, work: Path, size: int) -> MasterDataset:
    """The seed's dataset over the same training samples, extracted to loose files as the seed did."""
    loose = work / "loose"
    samples = datamodule.parts["train"].samples
    for batch in np.unique(samples["batch"]).tolist():
        _extract(data_dir / zip_name(batch), loose / str(batch), (BG, FG_BG, MASK_BLACK, DEPTH))

    def files(member) -> list[str]:
        return [str(loose / str(s["batch"]) / member(sample_id(s))) for s in samples]

    return MasterDataset(
        seed_transform(size),
        files(lambda s: source_member(BG, s.bg)),
        *(files(lambda s, c=c: composite_member(c, s)) for c in (FG_BG, MASK_BLACK, DEPTH)),
    )


# The seed's dataset names the batch contract's keys as the source document did.
SEED_KEYS = dict(zip(("bg_image", "fg_bg_image", "ms_bg_image", "dp_image"), KEYS))


def _seed_loader(dataset: MasterDataset, workers: int) -> DataLoader:
    # As the seed's DataLoader (pin_memory only where there is a GPU to pin for, as ours).
    return DataLoader(
        dataset, batch_size=BATCH_SIZE, shuffle=True, pin_memory=torch.cuda.is_available(), num_workers=workers,
        collate_fn=_seed_collate,
    )


def _seed_collate(samples: list[dict]) -> dict:
    """torch's default collation, under the batch contract's keys, the targets' first channel (the seed gave them
    3, Grayscale(3) on every image; the loss takes one): views, costing nothing beside the collation."""
    batch = {SEED_KEYS[key]: value for key, value in default_collate(samples).items()}
    return {key: value[:, :1] if key in TARGETS else value for key, value in batch.items()}


def _decode_floor(datamodule, n: int = 500) -> float:
    """Samples per second on one core of only reading and decoding (at reduced scale) a sample's three
    per-composite JPEGs: the floor of the zip path without a cache."""
    dataset = datamodule.parts["train"]
    zf, size = zipfile.ZipFile(dataset.zips[int(dataset.samples[0]["batch"])]), datamodule.preprocessing.image_size
    members = [composite_member(c, sample_id(s)) for s in dataset.samples[:n] for c in (FG_BG, MASK_BLACK, DEPTH)]
    start = time.perf_counter()
    for m in members:
        decode(zf.read(m), size, True, m)
    return n / (time.perf_counter() - start)


def _loading_rows(seed_dataset, datamodule, sizes: Sizes, title: str, note: str, rows: list[Row]) -> None:
    """Rows of one loader against the seed's, with 0, 1 and 2 workers; ``title`` has a ``{workers}`` field."""
    for workers in WORKERS:
        _say(title.format(workers=workers) + " ...")
        seed = _rate(_seed_loader(seed_dataset, workers), sizes.load_samples)
        datamodule.num_workers = workers
        ours = _rate(datamodule.train_dataloader(), sizes.load_samples)
        rows.append(Row(title.format(workers=workers), "samples/s", seed, ours, 4.0, note))


def bench_loading(data_dir: Path, sizes: Sizes, work: Path, rows: list[Row]) -> MasterDataset:
    """Rows 3; returns the seed's dataset for the training rows."""
    datamodule = instantiate(_data_config(data_dir, sizes).data)
    datamodule.setup()
    seed_dataset = _seed_dataset(data_dir, datamodule, work, datamodule.preprocessing.image_size)
    n = len(seed_dataset)
    floor = _decode_floor(datamodule)
    plain_note = (
        f"strategy {sizes.strategy} ({n:,} training samples), batch {BATCH_SIZE}; seed: MasterDataset, PIL on "
        f"extracted loose files; ours: the DataModule on the zips; decode-only floor {floor:,.0f}/s per core"
    )
    _loading_rows(seed_dataset, datamodule, sizes, "3 Loading, {workers} workers: bg, fg_bg, mask, depth at 64x64", plain_note, rows)
    cached = instantiate(_data_config(data_dir, sizes, "data.cache=true").data)
    build = _timed(cached.setup)
    cached_note = (
        f"cache built once in {build:.1f} s (all {sum(len(p) for p in cached.parts.values()):,} "
        "samples of the strategy, on every core); memory-mapped uint8"
    )
    _loading_rows(seed_dataset, cached, sizes, "3c Loading from the decoded cache (data.cache=true), {workers} workers", cached_note, rows)
    return seed_dataset


# 4. Training --------------------------------------------------------------------------------------


@dataclass
class _Feed:
    """One side of a training row: its loader, the step it feeds, and what it measured."""

    loader: DataLoader
    stepper: Stepper
    iterator: object = None
    seconds: float = 0.0
    waiting: float = 0.0
    samples: int = 0

    def done(self, sizes: Sizes) -> bool:
        return self.samples >= sizes.train_steps * BATCH_SIZE and self.seconds >= sizes.train_seconds

    def next_batch(self) -> dict:
        if self.iterator is None:
            self.iterator = iter(self.loader)
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def step(self) -> None:
        """A batch and a step on it, timed (the wait for the batch apart too)."""
        start = time.perf_counter()
        batch = self.next_batch()
        self.waiting += time.perf_counter() - start
        self.stepper.step(batch)
        self.seconds += time.perf_counter() - start
        self.samples += len(batch[BACKGROUND])


def _train_rates(feeds: dict[str, _Feed], sizes: Sizes) -> None:
    """Training steps fed by each of ``feeds`` in turn, until every feed has ``train_steps`` and ``train_seconds``:
    alternating, so that the machine's drift falls on all alike. Fills each feed's figures."""
    if sizes.train_steps > 1:
        for feed in feeds.values():  # warm-up: first-call allocations, oneDNN's kernel choices, worker start-up
            feed.stepper.step(feed.next_batch())
    while not all(f.done(sizes) for f in feeds.values()):
        for feed in feeds.values():
            feed.step()


def _shipped_step(cfg, module, device: torch.device) -> Option:
    """How train.py runs ``module``'s step with ``cfg`` on ``device``: its precision and memory format."""
    channels_last = use_channels_last(cfg.channels_last, module.net, device.type)
    precision = cfg.trainer.precision
    return Option(f"{precision}{', channels_last' if channels_last else ''}", precision, channels_last)


def _as_shipped(data_dir: Path, sizes: Sizes, name: str, device: torch.device):
    """Model ``name``'s DataModule (set up), its module, and the :class:`Option` train.py steps it with."""
    cfg = _data_config(data_dir, sizes, f"model={name}")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    module = build_module(cfg)
    return datamodule, module, _shipped_step(cfg, module, device)


def bench_training(data_dir: Path, sizes: Sizes, seed_dataset: MasterDataset, rows: list[Row]) -> None:
    """Rows 4: every model in conf/model/ trained end to end as shipped (the DataModule at its default
    ``num_workers``, the step in train.py's default precision and memory format) against the seed's pipeline
    (its DataLoader as the document printed it, no workers, the step in float32), steps alternating (full run)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for path in sorted((CONF / "model").glob("*.yaml")):
        name = path.stem
        try:
            datamodule, module, shipped = _as_shipped(data_dir, sizes, name, device)
            if fitted_without_gradients(module.net):  # calibrated, not trained (model=subtraction)
                continue
            _say(f"training: {name} on {device} ...")
            feeds = {"ours": _Feed(datamodule.train_dataloader(), Stepper(module, shipped, device))}
            if sizes.seed_training:
                feeds["seed"] = _Feed(_seed_loader(seed_dataset, 0), Stepper(module, Option("32-true"), device))
            _train_rates(feeds, sizes)
        except Exception as error:  # a model that cannot run here is reported, not fatal to the bench
            rows.append(Row(f"4 Training end to end, {name} ({device.type})", "samples/s", None, None, note=f"failed: {error!r}"))
            continue
        rate = {side: f.samples / f.seconds for side, f in feeds.items()}
        waits = ", ".join(f"{side} {f.waiting / f.seconds:.0%}" for side, f in feeds.items())
        rows.append(
            Row(
                f"4 Training end to end, {name} ({device.type}, batch {BATCH_SIZE}, 64x64)",
                "samples/s",
                rate.get("seed"),
                rate["ours"],
                1.0,
                f"forward + loss + backward + step; ours: {datamodule.num_workers} loader workers "
                f"(data.num_workers=auto), {shipped.name}; seed: its DataLoader (no workers), float32; "
                f"waiting for data: {waits}",
            )
        )


# The models of rows 4b: those whose steps are short enough for the loader's share to show (Net's take 10 s).
WORKER_MODELS = ("convgen", "unet")


def bench_training_workers(data_dir: Path, sizes: Sizes, rows: list[Row]) -> None:
    """Rows 4b: training end to end as shipped, fed by the DataModule at each of :data:`WORKERS`, steps alternating
    between them; the seed column is no workers. What ``data.num_workers=auto`` chooses from (fgbg/data/workers.py)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for name in WORKER_MODELS:
        _say(f"training: {name} fed by 0, 1 and 2 workers ...")
        datamodule, module, shipped = _as_shipped(data_dir, sizes, name, device)
        feeds = {}
        for workers in WORKERS:
            datamodule.num_workers = workers
            feeds[workers] = _Feed(datamodule.train_dataloader(), Stepper(module, shipped, device))
        _train_rates(feeds, sizes)
        rate = {workers: f.samples / f.seconds for workers, f in feeds.items()}
        for workers in WORKERS[1:]:
            rows.append(
                Row(
                    f"4b Training end to end, {name} ({device.type}), {workers} loader workers against none",
                    "samples/s",
                    rate[0],
                    rate[workers],
                    note=f"{shipped.name}; the seed column: the same with no workers; steps alternating; waiting for "
                    f"data: {', '.join(f'{w} workers {f.waiting / f.seconds:.0%}' for w, f in feeds.items())}",
                )
            )


# Profiles -----------------------------------------------------------------------------------------


def _top(profile: cProfile.Profile, n: int = 8) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(n)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
    return "\n".join(line.replace(str(ROOT) + "/", "") for line in lines[start:] if line.strip())


def profiles(data_dir: Path, sizes: Sizes, work: Path) -> str:
    """Where our time goes, one process each: writing one zip (no depth, q75) and loading with 0 workers."""
    settings = Settings(n_bg=sizes.n_bg, n_fg=FG_PER_ZIP, placements=PLACEMENTS, jpeg_quality=SEED_QUALITY)
    generation = cProfile.Profile()
    generation.runcall(generate, SampleScenes(0), None, work / "profile", settings, workers=1, show_progress=False)
    datamodule = instantiate(_data_config(data_dir, sizes, "data.num_workers=0").data)
    datamodule.setup()
    loader = datamodule.train_dataloader()
    _rate(loader, BATCH_SIZE)  # opening the zip (reading its directory) is paid once per process
    loading = cProfile.Profile()
    loading.runcall(_rate, loader, sizes.load_samples // 2)
    return (
        "Generation, one zip on one process (cProfile, by own time):\n\n```\n" + _top(generation) + "\n```\n\n"
        "Loading from the zips, 0 workers (cProfile, by own time):\n\n```\n" + _top(loading) + "\n```\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a sanity run (prints only)")
    parser.add_argument("--results", type=Path, help="write the table here (default: bench/RESULTS.md for a full run)")
    parser.add_argument("--work", type=Path, help="folder for the data made (default: a temporary one, removed)")
    parser.add_argument("--gpu", action="store_true", help="the GPU bench instead: python -m bench.gpu --help")
    argv = sys.argv[1:] if argv is None else argv
    if "--gpu" in argv:  # the GPU bench takes these options and its own
        from bench import gpu

        gpu.main([a for a in argv if a != "--gpu"])
        return
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    results = args.results or (None if args.quick else ROOT / "bench" / "RESULTS.md")
    # One generation process per zip: at most the full dataset's zips.
    cores = min(os.cpu_count() or 1, n_batches(Settings().n_fg))
    work = Path(tempfile.mkdtemp(prefix="fgbg-bench-", dir=args.work))
    try:
        rows: list[Row] = []
        started, load_at_start = time.perf_counter(), os.getloadavg()
        data_dir = bench_generation(sizes, cores, work, rows)
        bench_mapping(sizes, work, rows)
        seed_dataset = bench_loading(data_dir, sizes, work, rows)
        bench_training(data_dir, sizes, seed_dataset, rows)
        bench_training_workers(data_dir, sizes, rows)
        if sizes.option_seconds is not None:
            rows += option_rows(torch.device("cuda" if torch.cuda.is_available() else "cpu"), sizes.option_seconds)
        profile = "" if args.quick else profiles(data_dir, sizes, work)
        took = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python -m bench.run" + "".join(f" {a}" for a in argv)
    text = f"Command: `{command}` ({took:.0f} s)\n\nMachine: {machine(load_at_start)}\n\n{table(rows)}\n"
    print(text)
    if results is not None:
        results.write_text(f"# make bench: results of the last run\n\n{text}\n{profile}")
        _say(f"wrote {results}")


if __name__ == "__main__":
    main()
