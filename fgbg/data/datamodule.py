"""The LightningDataModule over the batch zips: strategy -> samples -> held-out split -> loaders.

The training loader resumes where a checkpoint stopped it, mid-epoch included: its order is a function of
``(seed, epoch)`` and Lightning saves its position (see :class:`ResumableLoader`).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fgbg.data.cache import CachedSampleDataset, DeviceCachedDataset, build
from fgbg.data.dataset import BAD_SAMPLE_CHOICES, PixelDataset, ZipSampleDataset
from fgbg.data.index import Selection, select, split
from fgbg.data.packed import collated
from fgbg.data.perturb import PerturbedDataset, PlatePerturbation, normalised, unnormalised
from fgbg.data.transforms import Preprocessing
from fgbg.data.workers import AUTO, available_cores, worker_init
from fgbg.data.workers import num_workers as resolved_workers
from fgbg.errors import ConfigError, check_choice, check_fraction, check_int, check_seed

# The held-out loaders' names, in their order: the parts as they are, then with the plates perturbed.
EVAL_VARIANTS = ("clean", "perturbed")

class EpochSampler(DistributedSampler):
    """torch's ``DistributedSampler``: a permutation seeded by ``seed + epoch`` (Lightning sets the epoch),
    this process's share of it, started ``start`` samples in once (the next iteration only) when resuming."""

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self):
        start, self.start = self.start, 0
        return itertools.islice(super().__iter__(), start, None)


class ResumableLoader(DataLoader):
    """A training DataLoader over an :class:`EpochSampler` that continues mid-epoch after a checkpoint.

    Lightning saves ``state_dict()`` of such a loader in its checkpoints and hands it back to
    ``load_state_dict()`` on resume: the epoch and how many of its batches were handed out. Counted here, where
    the training loop takes them, not in the sampler, which worker processes read ahead.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch = self._batches = 0

    def __iter__(self):
        if not isinstance(self.sampler, EpochSampler):  # Lightning's overfit_batches swaps in a sequential sampler
            yield from DataLoader.__iter__(self)
            return
        # A generator: the sampler is read at the first batch, after Lightning has set the epoch.
        if self.sampler.epoch != self._epoch:
            self._epoch, self._batches = self.sampler.epoch, 0
        self.sampler.start = self._batches * self.batch_size
        for batch in super().__iter__():
            self._batches += 1
            yield batch
        self._batches = 0  # a finished epoch: iterated again, it starts from the top

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._epoch, self._batches = state["epoch"], state["batches"]
        self.sampler.set_epoch(self._epoch)


class ZipDataModule(L.LightningDataModule):
    """Samples of ``strategy`` (see ``conf/data/default.yaml``) from the zips in ``data_dir``.

    Args:
        data_dir: folder holding ``batch<N>_images.zip``.
        strategy: key of ``strategies``, e.g. ``4k``; each is ``{"batches": [...], "n_bg": N | None}``, and
            optionally ``held_out_batches: [...]``, the zips of the validation and test foregrounds.
        split: keyword arguments of :func:`fgbg.data.index.split` (held-out fractions, seed).
        image_size, grayscale, normalize, stats: the :class:`~fgbg.data.transforms.Preprocessing`
            (``preprocessing``): side, colour, and per-category mean/std that normalise the inputs when ``normalize``.
        num_workers: loader worker processes, or ``auto`` (:func:`fgbg.data.workers.auto_workers`: the fastest
            for the machine); ``num_workers`` holds the number.
        cache: decode the strategy's samples once into memory-mapped uint8 arrays under
            ``data_dir/cache/`` and read them from there (see :mod:`fgbg.data.cache`).
        cache_device: ``cpu``, or a device (``cuda``) that the cache's arrays move to once, where batches are
            then gathered (:class:`~fgbg.data.cache.DeviceCachedDataset`; ``num_workers`` 0).
        on_bad_sample: ``raise`` or ``skip`` (and count) samples whose images are corrupt, when reading the zips.
        seed: the training order's (a permutation per epoch, drawn from ``seed + epoch``).
        perturbation: the :class:`~fgbg.data.perturb.PlatePerturbation` of ``augment`` and ``perturbed_eval``.
        augment: perturb training batches at random, after their transfer to the device.
        perturbed_eval: validation and test loaders are two, :data:`EVAL_VARIANTS`: the part as it is, then
            perturbed (:class:`~fgbg.data.perturb.PerturbedDataset`, from ``perturbation_seed`` and each
            sample's index), see :meth:`eval_variants`.

    Defaults live in ``conf/data/default.yaml`` only. ``setup`` fills ``parts`` and ``split_description`` (what
    :class:`~fgbg.training.callbacks.SplitFile` writes to ``<run>/split.json``), ``has_depth`` (False for
    mask-only data, made with depth=none: items have no ``depth`` key) and ``depth_record`` (the manifests'
    ``settings.depth``, how the depth maps were made; None when mask-only or the zips have no manifest).
    Raises :class:`~fgbg.errors.ConfigError`, naming the ``data.`` key, for a value out of range.
    """

    def __init__(
        self,
        data_dir: str,
        strategy: str,
        strategies: dict,
        split: dict,
        image_size: int,
        grayscale: bool,
        normalize: bool,
        stats: dict,
        batch_size: int,
        num_workers: int | str,
        cache: bool,
        cache_device: str,
        on_bad_sample: str,
        seed: int,
        perturbation: PlatePerturbation | None,
        augment: bool,
        perturbed_eval: bool,
        perturbation_seed: int,
    ):
        super().__init__()
        self.data_dir, self.strategy, self.strategies = Path(data_dir), strategy, strategies
        self.split_args = _checked_split(split)
        self.preprocessing = Preprocessing.from_data(
            {"image_size": image_size, "grayscale": grayscale, "normalize": normalize, "stats": stats}
        )
        self.batch_size = check_int("data.batch_size", batch_size, 1)
        self.cache, self.cache_device = cache, _checked_cache_device(cache, cache_device, num_workers)
        # The cache on a device is read in the training process: no worker would have anything to do.
        self.num_workers = 0 if self.cache_device != "cpu" else resolved_workers(num_workers)
        self.on_bad_sample = check_choice("data.on_bad_sample", on_bad_sample, BAD_SAMPLE_CHOICES)
        self.seed = check_seed(seed, "data.seed")
        for key, value in (("augment", augment), ("perturbed_eval", perturbed_eval)):
            if not isinstance(value, bool):
                raise ConfigError(f"data.{key}={value!r}: expected true or false")
            if value and perturbation is None:
                raise ConfigError(f"data.{key}=true needs data.perturbation (e.g. data/perturbation=bgmv2)")
        self.perturbation, self.augment, self.perturbed_eval = perturbation, augment, perturbed_eval
        self.perturbation_seed = check_seed(perturbation_seed, "data.perturbation_seed")
        self.parts: dict[str, PixelDataset] = {}
        self.split_description: dict = {}
        self.has_depth: bool | None = None  # set by setup(), from the zips
        self.depth_record: dict | None = None

    def _build_cache(self, *selection) -> Path:
        """The cache of a :class:`~fgbg.data.index.Selection`, given as its fields (``*select(...)``)."""
        zips, samples, has_depth = Selection(*selection)[:3]
        # Built before training, with nothing beside it: on every core, whatever the training loader's workers.
        return build(self.data_dir, self.strategy, zips, samples, self.preprocessing, available_cores(), has_depth)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node before setup: the cache is built once, not per device.
        if self.cache:
            self._build_cache(*select(self.data_dir, self.strategy, self.strategies))

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        selection = select(self.data_dir, self.strategy, self.strategies)
        self.has_depth, self.depth_record = selection.has_depth, selection.depth_record
        parts, self.split_description = split(selection.samples, **self.split_args, held_out_fg=selection.held_out_fg)
        self.split_description = {"strategy": self.strategy, "data_dir": str(self.data_dir), **self.split_description}
        if self.cache:
            folder = self._build_cache(*selection)
            self.parts = {name: self._cached(folder, part) for name, part in parts.items()}
        else:
            self.parts = {
                name: ZipSampleDataset(selection.zips, part, self.preprocessing, self.on_bad_sample, self.has_depth)
                for name, part in parts.items()
            }

    def _cached(self, folder: Path, samples) -> CachedSampleDataset:
        if self.cache_device == "cpu":
            return CachedSampleDataset(folder, samples, self.preprocessing, self.has_depth)
        return DeviceCachedDataset(folder, samples, self.preprocessing, self.has_depth, self.cache_device)

    def _loader_args(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            # Batches of the cache on a device are there already.
            "pin_memory": torch.cuda.is_available() and self.cache_device == "cpu",
            "collate_fn": collated,
            "worker_init_fn": worker_init,
        }

    def train_dataloader(self) -> ResumableLoader:
        dataset = self.parts["train"]
        # One share per process under DDP (Lightning keeps a DistributedSampler it is given).
        replicas, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        return ResumableLoader(
            dataset,
            sampler=EpochSampler(dataset, self.seed, replicas, rank),
            # Its own generator for the workers' base seed: the loader leaves the global random state alone,
            # so the one a checkpoint restores (fgbg.training.callbacks.RngState) continues as if never stopped.
            generator=torch.Generator().manual_seed(self.seed),
            **self._loader_args(),
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._held_out_loaders("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._held_out_loaders("test")

    def eval_variants(self) -> tuple[str, ...]:
        """The names of the loaders ``val_dataloader`` and ``test_dataloader`` return, in their order."""
        return EVAL_VARIANTS if self.perturbed_eval else EVAL_VARIANTS[:1]

    def _held_out_loaders(self, part: str) -> DataLoader | list[DataLoader]:
        """One loader of ``part``, or (``perturbed_eval``) one per :data:`EVAL_VARIANTS`."""
        clean = self.parts[part]
        if not self.perturbed_eval:
            return DataLoader(clean, **self._loader_args())
        perturbed = PerturbedDataset(clean, self.perturbation, self.perturbation_seed, self.preprocessing)
        return [DataLoader(dataset, **self._loader_args()) for dataset in (clean, perturbed)]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Training batches perturbed (``augment``) where they train: on the device, after the transfer. Only
        batches of the batch contract: the model summary's example input (a tuple) passes through too."""
        if not (self.augment and isinstance(batch, dict) and self.trainer is not None and self.trainer.training):
            return batch
        stats, gray = self.preprocessing.stats, self.preprocessing.grayscale
        return normalised(self.perturbation(unnormalised(batch, stats), train=True, gray=gray), stats)


def _checked_cache_device(cache: bool, device: str, num_workers) -> str:
    """``data.cache_device``: ``cpu`` or a torch device for the cache (``data.cache=true``), read without workers."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"data.cache_device={device!r}: expected cpu or a torch device such as cuda ({error})") from None
    if kind == "cpu":
        return "cpu"
    if not cache:
        raise ConfigError(f"data.cache_device={device}: needs data.cache=true (it moves the decoded cache there)")
    if num_workers not in (0, AUTO):
        raise ConfigError(
            f"data.cache_device={device} reads batches in the training process: set data.num_workers=0 or auto"
        )
    return device


def _checked_split(split: dict) -> dict:
    """``data.split`` with its fractions in [0, 1), validation plus test below 1 (training keeps the rest)."""
    for kind in ("bg", "fg"):
        val, test = (check_fraction(f"data.split.{part}_{kind}", split[f"{part}_{kind}"]) for part in ("val", "test"))
        if val + test >= 1:
            raise ConfigError(
                f"data.split.val_{kind}={val:g} + data.split.test_{kind}={test:g} = {val + test:g}: expected below 1 "
                f"(training keeps the other {'backgrounds' if kind == 'bg' else 'foregrounds'})"
            )
    check_int("data.split.min_fg_to_split", split["min_fg_to_split"], 0)
    check_seed(split["seed"], "data.split.seed")
    return split
