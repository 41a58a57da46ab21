"""Rows 5: the training step's speed options side by side, per model: bf16 autocast, channels_last, torch.compile,
fewer intra-op threads, and combinations.

Each row times one option against the baseline (float32, contiguous tensors, torch's default threads) on copies
of the same model: steps alternate, baseline then option, in one process, so that a shared machine's drift falls
on both alike. The step is train.py's: forward (under Lightning's precision plugin, as the Trainer runs it) +
loss, backward, optimiser step, at batch 16 on random inputs of the model's recipe size (the data's loading is
rows 3's). channels_last converts the weights only, as train.py does (the activations follow them). Every model of
``conf/model/`` with weights to fit, with its recipe's loss and optimiser.

    python -m bench.cpu_options [seconds]     # prints the rows (about 9 minutes on 2 cores at 10 s, Net's half)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import fgbg.run_dirs  # noqa: F401  (registers the resolvers the configs read)
from bench.report import Row, table
from bench.steps import Option, Stepper
from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.training.module import build_module

CONF = Path(__file__).resolve().parent.parent / "conf"
BATCH_SIZE = 16  # the seed's DataLoader, as rows 4
MIN_STEPS = 2  # timed steps per side at least: Net takes ~10 s a step on 2 cores, so it gets these two
# Each model's recipe: the U-Net is trained by experiment=matting; the others by conf/train.yaml's defaults.
RECIPES = {"unet": ["experiment=matting"]}
# Net's steps take ~10 s on 2 cores: only the options its defaults use (the others: python -m bench.cpu_options).
BENCH_OPTIONS = {"net": ("bf16-mixed", "channels_last + bf16-mixed")}


def options() -> list[Option]:
    fewer = max(1, torch.get_num_threads() // 2)
    return [
        Option("bf16-mixed", precision="bf16-mixed"),
        Option("channels_last", channels_last=True),
        Option("channels_last + bf16-mixed", precision="bf16-mixed", channels_last=True),
        Option("torch.compile", compile=True),
        Option("torch.compile + bf16-mixed", precision="bf16-mixed", compile=True),
        Option(f"{fewer} thread(s) of {torch.get_num_threads()}", threads=fewer),
    ]


def random_batch(side: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A batch of the training data's shapes: images ``(B, 3, side, side)`` in [0, 1], a 0/1 mask and a depth
    ``(B, 1, side, side)``."""
    images = {k: torch.rand(BATCH_SIZE, 3, side, side, generator=generator) for k in (BACKGROUND, COMPOSITE)}
    mask = (torch.rand(BATCH_SIZE, 1, side, side, generator=generator) > 0.5).float()
    return {**images, MASK: mask, DEPTH: torch.rand(BATCH_SIZE, 1, side, side, generator=generator)}


def alternated(base: Stepper, option: Stepper, batch: dict[str, torch.Tensor], seconds: float) -> tuple[float, float, int]:
    """Samples per second of ``base`` and ``option``, stepped in turn until both have had :data:`MIN_STEPS` and
    ``seconds`` have passed; and the steps each had."""
    spent = {base: 0.0, option: 0.0}
    steps = 0
    while steps < MIN_STEPS or sum(spent.values()) < seconds:
        for side in (base, option):
            spent[side] += side.step(batch)
        steps += 1
    return BATCH_SIZE * steps / spent[base], BATCH_SIZE * steps / spent[option], steps


def model_config(name: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"model={name}", *RECIPES.get(name, [])])


def model_rows(name: str, device: torch.device, seconds: float, only: tuple[str, ...] | None = None) -> list[Row]:
    """Every option of :func:`options` (those named ``only``, when given) against the baseline on model ``name``
    (``conf/model/<name>.yaml``)."""
    cfg = model_config(name)
    module = build_module(cfg)
    batch = random_batch(cfg.data.image_size, torch.Generator().manual_seed(0))
    base = Stepper(module, Option("baseline"), device)
    base.step(batch)  # warm-up: first-call allocations and oneDNN's kernel choices
    rows = []
    for option in options():
        if (option.threads and device.type != "cpu") or (only is not None and option.name not in only):
            continue
        _say(f"cpu options: {name}, {option.name} ...")
        stepper = Stepper(module, option, device)
        warm_up = stepper.step(batch)  # torch.compile compiles here
        base_rate, rate, steps = alternated(base, stepper, batch, seconds)
        compiled = f"; first step (compiling) {warm_up:.0f} s, less with inductor's disk cache warm"
        compiled = compiled if option.compile else ""
        rows.append(
            Row(
                f"5 Training step option: {option.name}, {name} ({device.type}, batch {BATCH_SIZE}, "
                f"{cfg.data.image_size}x{cfg.data.image_size})",
                "samples/s",
                base_rate,
                rate,
                note=f"{' '.join([f'model={name}', *RECIPES.get(name, [])])}; seed column: float32, contiguous, "
                f"{torch.get_num_threads()} threads; {steps} steps each, alternating{compiled}",
            )
        )
    return rows


def trainable(name: str) -> bool:
    """Whether ``conf/model/<name>.yaml``'s model has weights to fit (not the subtraction baseline)."""
    return any(p.requires_grad for p in build_module(model_config(name)).net.parameters())


def option_rows(device: torch.device, seconds: float, every_option: bool = False) -> list[Row]:
    """Rows 5: for each trainable model of ``conf/model/``, each option against the baseline, ``seconds`` (at
    least :data:`MIN_STEPS` steps a side) per option; those of :data:`BENCH_OPTIONS` only, unless ``every_option``."""
    names = [path.stem for path in sorted((CONF / "model").glob("*.yaml"))]
    return [
        row
        for name in names
        if trainable(name)
        for row in model_rows(name, device, seconds, None if every_option else BENCH_OPTIONS.get(name))
    ]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    print(table(option_rows(torch.device("cpu"), float(sys.argv[1]) if len(sys.argv) > 1 else 10.0, every_option=True)))
