"""Plate perturbations: a background plate that is never pixel-identical to the composite's background.

The sample data's plate is the composite's exact background, so ``|composite - background| > t`` already
finds the mask; a user's own plate is shot at another moment, exposed and placed a little otherwise. As in
BackgroundMattingV2 (Lin et al. 2021), :class:`PlatePerturbation` perturbs the plate (colour jitter, a small
misalignment), both inputs (independent sensor noise) and the composite's background (a fake shadow of the
foreground), so a model cannot fall back on differencing. Training adds a joint horizontal flip of inputs and
targets; the held-out perturbation (:meth:`PlatePerturbation.evaluation`, :class:`PerturbedDataset`) leaves
the targets untouched and is drawn per sample from ``(seed, sample index)``: the same in every run, whatever
the batch size or the number of workers.

Images here are unnormalised, in [0, 1]; :func:`unnormalised` and :func:`normalised` undo and redo the data's
per-category normalisation (``Preprocessing.stats``) around a perturbation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import kornia.augmentation as K
import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import translate
from torch import Tensor, nn
from torch.utils.data import Dataset

from fgbg.data.batch import BACKGROUND, COMPOSITE, INPUTS, KEYS, MASK
from fgbg.data.packed import PackedBatch, packed_copy
from fgbg.data.transforms import INPUT_CATEGORIES, Preprocessing
from fgbg.errors import ConfigError

# Each part's keys, with the upper bound of each value (None: unbounded); every value is >= 0.
_PARTS = {
    "color_jitter": {"p": 1, "brightness": 1, "contrast": 1, "saturation": 1, "hue": 0.5},
    "noise": {"p": 1, "sigma": None},
    "misalign": {"p": 1, "degrees": 180, "translate": 1},
    "shadow": {"p": 1, "strength": 1, "offset": None, "blur": None},
    "flip": {"p": 1},
}


def _checked(part: str, block: Mapping) -> dict:
    """``data.perturbation.<part>`` as a plain dict, its keys exactly ``_PARTS[part]``, each value in range."""
    bounds = _PARTS[part]
    if set(block) != set(bounds):
        raise ConfigError(f"data.perturbation.{part}: expected keys {', '.join(bounds)}, got {', '.join(block)}")
    for key, high in bounds.items():
        value = block[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0 or (high and value > high):
            allowed = f"0..{high}" if high else ">= 0"
            raise ConfigError(f"data.perturbation.{part}.{key}={value!r}: expected a number {allowed}")
    if part == "shadow" and not isinstance(block["offset"], numbers.Integral):
        raise ConfigError(f"data.perturbation.shadow.offset={block['offset']!r}: expected a whole number of pixels")
    return dict(block)


class PlatePerturbation(nn.Module):
    """Perturb a batch of the batch contract (:mod:`fgbg.data.batch`), unnormalised inputs in [0, 1].

    One block per part (``conf/data/perturbation/*.yaml``), each with its probability ``p`` per sample:

    - ``color_jitter`` ``{p, brightness, contrast, saturation, hue}``: the plate only (torchvision's factors,
      :class:`kornia.augmentation.ColorJitter`); gray data is averaged back to gray.
    - ``noise`` ``{p, sigma}``: Gaussian noise, its std uniform in [0, sigma], drawn for plate and composite
      independently (flag, std and noise).
    - ``misalign`` ``{p, degrees, translate}``: the plate rotated by up to ``degrees`` and shifted by up to
      ``translate`` of its side (:class:`kornia.augmentation.RandomAffine`, border pixels repeated).
    - ``shadow`` ``{p, strength, offset, blur}``: the mask shifted by up to ``offset`` px each way, blurred
      (Gaussian, ``blur`` px sigma) and darkening the composite's non-foreground pixels by a factor up to
      ``strength`` (uniform); the plate stays unshadowed, as a plate shot without the foreground would be.
    - ``flip`` ``{p}``: training only, a horizontal flip of inputs and targets together.

    Raises :class:`~fgbg.errors.ConfigError`, naming the ``data.perturbation.`` key, for a value out of range.
    """

    def __init__(self, color_jitter: Mapping, noise: Mapping, misalign: Mapping, shadow: Mapping, flip: Mapping):
        super().__init__()
        jitter, self.noise, affine, self.shadow, flip = (
            _checked(part, block) for part, block in zip(_PARTS, (color_jitter, noise, misalign, shadow, flip))
        )
        self.color_jitter = K.ColorJitter(**jitter)
        shift = affine["translate"]
        # Border pixels repeated: a black edge would be a cue of its own that no real plate has.
        self.misalign = K.RandomAffine(affine["degrees"], (shift, shift), padding_mode="border", p=affine["p"])
        self.flip = K.RandomHorizontalFlip(p=flip["p"])

    def forward(self, batch: Mapping[str, Tensor], *, train: bool, gray: bool) -> dict[str, Tensor]:
        """A new batch: every part, drawn from the global random state (of the inputs' device); ``train=False``
        leaves out the flip (mask and depth are then returned as given). ``gray``: the inputs are gray
        replicated to 3 channels, and stay so. ``depth`` may be absent (mask-only data)."""
        out = self._flipped(batch) if train else dict(batch)
        out[COMPOSITE] = self._shadowed(out[COMPOSITE], out[MASK])
        plate = self.misalign(self._jittered(out[BACKGROUND], gray))
        out[BACKGROUND], out[COMPOSITE] = self._noisy(plate, gray), self._noisy(out[COMPOSITE], gray)
        return out

    def evaluation(self, batch: Mapping[str, Tensor], seeds: Sequence[int], gray: bool) -> dict[str, Tensor]:
        """The held-out perturbation (no flip): sample ``i`` of ``batch`` perturbed alone, from ``seeds[i]``,
        so its perturbation depends on its seed only. The CPU random state is left as it was."""
        samples = []
        for i, seed in enumerate(seeds):
            # kornia draws its parameters from the global generator; fork_rng restores it afterwards.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                samples.append(self({key: value[i : i + 1] for key, value in batch.items()}, train=False, gray=gray))
        return {key: torch.cat([sample[key] for sample in samples]) for key in batch}

    def _flipped(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        # One draw for the sample's every image, so that targets still match the inputs.
        params = self.flip.forward_parameters(batch[BACKGROUND].shape)
        return {key: self.flip(value, params=params) if key in KEYS else value for key, value in batch.items()}

    def _jittered(self, plate: Tensor, gray: bool) -> Tensor:
        """``(B, 3, H, W)``: saturation and hue leave gray pixels gray but for rounding; the mean undoes that."""
        out = self.color_jitter(plate)
        return out.mean(1, keepdim=True).expand_as(out).contiguous() if gray else out

    @staticmethod
    def _drawn(like: Tensor, p: float, high: float) -> Tensor:
        """``(B, 1, 1, 1)`` of ``like``'s dtype: per sample, 0 with probability ``1 - p``, else uniform in [0, high]."""
        size, device = like.shape[0], like.device
        drawn = torch.rand(size, device=device) * high * (torch.rand(size, device=device) < p)
        return drawn.view(-1, 1, 1, 1).to(like.dtype)

    def _noisy(self, image: Tensor, gray: bool) -> Tensor:
        """``(B, C, H, W)`` plus noise of a std drawn per sample, one channel replicated when ``gray``."""
        sigma = self._drawn(image, self.noise["p"], self.noise["sigma"])
        shape = (image.shape[0], 1, *image.shape[2:]) if gray else image.shape
        return (image + sigma * torch.randn(shape, device=image.device, dtype=image.dtype)).clamp(0, 1)

    def _shadowed(self, composite: Tensor, mask: Tensor) -> Tensor:
        """``(B, C, H, W)`` composite darkened outside ``mask`` ``(B, 1, H, W)`` by a shifted, blurred copy of it."""
        offset, blur = self.shadow["offset"], self.shadow["blur"]
        strength = self._drawn(composite, self.shadow["p"], self.shadow["strength"])
        shift = torch.randint(-offset, offset + 1, (len(mask), 2), device=mask.device).to(mask.dtype)
        shadow = translate(mask, shift, align_corners=False)
        if blur > 0:
            shadow = gaussian_blur2d(shadow, 2 * math.ceil(3 * blur) + 1, (blur, blur))
        return composite * (1 - strength * shadow * (1 - mask))


def unnormalised(batch: Mapping[str, Tensor], stats: Mapping | None) -> dict[str, Tensor]:
    """The inputs of ``batch`` back in [0, 1] from ``Preprocessing.stats`` (``None``: as they are)."""
    return _scaled(batch, stats, lambda image, mean, std: image * std + mean)


def normalised(batch: Mapping[str, Tensor], stats: Mapping | None) -> dict[str, Tensor]:
    """The inputs of ``batch`` normalised by ``Preprocessing.stats`` as the datasets do (``None``: as they are)."""
    return _scaled(batch, stats, lambda image, mean, std: (image - mean) / std)


def _scaled(batch: Mapping[str, Tensor], stats: Mapping | None, scale) -> dict[str, Tensor]:
    out = dict(batch)
    if stats is not None:
        for key in INPUTS:
            category = stats[INPUT_CATEGORIES[key]]
            out[key] = scale(batch[key], float(category["mean"]), float(category["std"]))
    return out


def sample_seed(seed: int, index: int) -> int:
    """The seed of held-out sample ``index``'s perturbation: ``(seed, index)`` mixed (numpy's SeedSequence), so
    that neighbouring seeds and indices do not give related streams."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class PerturbedDataset(Dataset):
    """``dataset``'s items (made by ``preprocessing``; read through ``PixelDataset.batch``) with ``perturbation``'s held-out perturbation, item
    ``i``'s drawn from :func:`sample_seed` ``(seed, i)``: the same in every run, batch size and worker count.
    Targets are the dataset's own."""

    def __init__(self, dataset: Dataset, perturbation: PlatePerturbation, seed: int, preprocessing: Preprocessing):
        self.dataset, self.perturbation, self.seed, self.preprocessing = dataset, perturbation, seed, preprocessing

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> PackedBatch:
        batch, kept = self._batch(indices)
        stats = self.preprocessing.stats
        seeds = [sample_seed(self.seed, index) for index in kept]
        perturbed = self.perturbation.evaluation(unnormalised(batch, stats), seeds, self.preprocessing.grayscale)
        return packed_copy(normalised(perturbed, stats))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def _batch(self, indices: list[int]) -> tuple[dict[str, Tensor], list[int]]:
        """The base batch of ``indices`` and the indices it is of: fewer when the dataset skipped bad samples
        (``data.on_bad_sample=skip``); then each is read alone, to know which, and a batch of one bad sample
        raises ``ValueError``."""
        batch = self.dataset.batch(indices)
        if len(batch[BACKGROUND]) == len(indices):
            return batch, indices
        items, kept = [], []
        for index in indices:
            try:
                items.append(self.dataset.batch([index]))
                kept.append(index)
            except ValueError:
                continue
        return {key: torch.cat([item[key] for item in items]) for key in items[0]}, kept
