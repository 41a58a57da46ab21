"""Plate perturbations: each part's probability and strength, seeded held-out perturbation, normalisation."""

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, KEYS, MASK
from fgbg.data.packed import collated
from fgbg.data.perturb import PerturbedDataset, PlatePerturbation, normalised, sample_seed, unnormalised
from fgbg.data.transforms import Preprocessing
from fgbg.errors import ConfigError
from fgbg.format.names import BG, FG_BG
from tests.helpers.paths import CONF_DIR

PARTS = ("color_jitter", "noise", "misalign", "shadow", "flip")
# The keys each part changes when it applies (the flip: in training).
CHANGES = {
    "color_jitter": {BACKGROUND},
    "noise": {BACKGROUND, COMPOSITE},
    "misalign": {BACKGROUND},
    "shadow": {COMPOSITE},
    "flip": set(KEYS),
}
STATS = {BG: {"mean": 0.7, "std": 0.25}, FG_BG: {"mean": 0.6, "std": 0.3}}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    torch.manual_seed(0)


def perturbation(**parts):
    """conf/data/perturbation/bgmv2.yaml's perturbation, every part's p 0 but for ``parts`` (``{part: {key: v}}``)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "perturbation" / "bgmv2.yaml"))
    for part in PARTS:
        cfg[part] = {**cfg[part], "p": 0.0, **parts.get(part, {})}
    return PlatePerturbation(**{part: cfg[part] for part in PARTS})


def batch(size=4, side=32, gray=False, depth=True):
    """Random inputs (gray replicated when ``gray``), a square foreground left of the middle, random depth."""
    channels = 1 if gray else 3
    out = {key: torch.rand(size, channels, side, side).expand(-1, 3, -1, -1).clone() for key in (BACKGROUND, COMPOSITE)}
    out[MASK] = torch.zeros(size, 1, side, side)
    out[MASK][..., side // 4 : side * 3 // 4, side // 8 : side // 2] = 1  # not symmetric: a flip shows
    if depth:
        out[DEPTH] = torch.rand(size, 1, side, side)
    return out


def flat(value, size=8, side=32):
    """Inputs of one grey ``value`` everywhere, a square mask."""
    return {**batch(size, side), BACKGROUND: torch.full((size, 3, side, side), value),
            COMPOSITE: torch.full((size, 3, side, side), value)}


def changed(before, after) -> set[str]:
    return {key for key in before if not torch.equal(before[key], after[key])}


def test_at_p0_every_part_leaves_the_batch_as_it_is():
    b = batch()
    out = perturbation()(b, train=True, gray=False)
    assert not changed(b, out) and out is not b and out.keys() == b.keys()


@pytest.mark.parametrize("part", PARTS)
def test_at_p1_a_part_changes_its_images_only(part):
    b = batch()
    out = perturbation(**{part: {"p": 1.0}})(b, train=True, gray=False)
    assert changed(b, out) == CHANGES[part]


@pytest.mark.parametrize("part", PARTS)
def test_a_part_is_seeded(part):
    perturb, b = perturbation(**{part: {"p": 0.5}}), batch(8)
    torch.manual_seed(3)
    first = perturb(b, train=True, gray=False)
    torch.manual_seed(3)
    second = perturb(b, train=True, gray=False)
    assert not changed(first, second)
    assert changed(first, perturb(b, train=True, gray=False))  # another draw


def test_evaluation_leaves_the_targets_alone_and_never_flips():
    b = batch()
    out = perturbation(**{part: {"p": 1.0} for part in PARTS}).evaluation(b, [1, 2, 3, 4], gray=False)
    assert changed(b, out) == {BACKGROUND, COMPOSITE}
    assert not changed(b, perturbation(flip={"p": 1.0}).evaluation(b, [1, 2, 3, 4], gray=False))


def test_the_brightness_factor_stays_in_its_range():
    perturb = perturbation(color_jitter={"p": 1.0, "brightness": 0.18, "contrast": 0, "saturation": 0, "hue": 0})
    factor = perturb(flat(0.5, size=64), train=False, gray=False)[BACKGROUND].mean((1, 2, 3)) / 0.5
    assert factor.min() >= 0.82 - 1e-6 and factor.max() <= 1.18 + 1e-6
    assert factor.max() - factor.min() > 0.2  # drawn over the range, not one value


def test_noise_std_is_drawn_up_to_sigma_independently_for_each_input():
    b = flat(0.5, size=64)
    out = perturbation(noise={"p": 1.0, "sigma": 0.03})(b, train=False, gray=False)
    stds = {key: (out[key] - 0.5).std((1, 2, 3)) for key in (BACKGROUND, COMPOSITE)}
    for std in stds.values():
        assert std.max() <= 0.03 * 1.05
        assert abs(std.mean().item() - 0.015) < 0.004  # uniform in [0, sigma]: mean sigma / 2
    assert not torch.allclose(stds[BACKGROUND], stds[COMPOSITE])


def test_misalignment_shifts_the_plate_by_at_most_translate_of_its_side():
    side, translate = 32, 0.1
    b = {**batch(16, side), BACKGROUND: torch.zeros(16, 3, side, side)}
    b[BACKGROUND][..., 12:20, 12:20] = 1  # a centred blob, whose centroid moves with the plate
    out = perturbation(misalign={"p": 1.0, "degrees": 0.0, "translate": translate})(b, train=False, gray=False)
    coords = torch.arange(side, dtype=torch.float32)

    def centroid(images):  # (B, 2): x and y of each plate's centroid
        weights = images[:, 0]
        total = weights.sum((1, 2))
        return torch.stack([(weights.sum(1) * coords).sum(1) / total, (weights.sum(2) * coords).sum(1) / total], 1)

    shift = (centroid(out[BACKGROUND]) - centroid(b[BACKGROUND])).abs()
    assert shift.max() <= translate * side + 1e-3 and shift.max() > 0.5


def test_the_shadow_only_darkens_the_composite_outside_the_foreground():
    b = flat(0.5, size=16)
    out = perturbation(shadow={"p": 1.0, "strength": 0.3, "offset": 4, "blur": 2.0})(b, train=False, gray=False)
    inside, composite = b[MASK].bool().expand(-1, 3, -1, -1), out[COMPOSITE]
    assert torch.equal(out[BACKGROUND], b[BACKGROUND])  # never the plate
    assert torch.equal(composite[inside], b[COMPOSITE][inside])
    darkening = 1 - composite / 0.5
    assert darkening.min() >= -1e-6 and darkening.max() <= 0.3 + 1e-6 and darkening.max() > 0.01


def test_gray_inputs_stay_gray():
    b = batch(8, gray=True)
    out = perturbation(**{part: {"p": 1.0} for part in PARTS})(b, train=True, gray=True)
    for key in (BACKGROUND, COMPOSITE):
        assert torch.equal(out[key][:, 0], out[key][:, 1]) and torch.equal(out[key][:, 0], out[key][:, 2])


def test_a_batch_without_depth_is_perturbed_without_one():
    b = batch(depth=False)
    out = perturbation(**{part: {"p": 1.0} for part in PARTS})(b, train=True, gray=False)
    assert out.keys() == b.keys() and torch.equal(out[MASK], b[MASK].flip(-1))


def test_evaluation_depends_on_each_samples_seed_only_and_keeps_the_random_state():
    perturb, b = perturbation(**{part: {"p": 0.5} for part in PARTS}), batch(4)
    state = torch.get_rng_state()
    together = perturb.evaluation(b, [5, 6, 7, 8], gray=False)
    assert torch.equal(torch.get_rng_state(), state)
    alone = perturb.evaluation({key: value[2:3] for key, value in b.items()}, [7], gray=False)
    assert all(torch.equal(together[key][2:3], alone[key]) for key in b)
    assert sample_seed(0, 1) != sample_seed(1, 0) and sample_seed(0, 1) == sample_seed(0, 1)


@pytest.mark.parametrize("stats", [STATS, None])
def test_normalisation_round_trip(stats):
    b = batch()
    normal = normalised(b, stats)
    if stats:
        assert torch.allclose(normal[COMPOSITE], (b[COMPOSITE] - 0.6) / 0.3)
    back = unnormalised(normal, stats)
    assert all(torch.allclose(back[key], b[key], atol=1e-6) for key in b)
    assert normal[MASK] is b[MASK] and normal[DEPTH] is b[DEPTH]  # targets are never normalised


class Items(Dataset):
    """A fixed dataset of ``batch``'s items, normalised by ``stats``, read as a PixelDataset is, through ``batch``."""

    def __init__(self, stats, size=6):
        self.images = normalised(batch(size, 16, gray=True), stats)

    def __len__(self):
        return len(self.images[MASK])

    def batch(self, indices):
        return {key: value[indices] for key, value in self.images.items()}


def test_perturbed_dataset_is_the_same_whatever_the_batch_size_and_run():
    preprocessing = Preprocessing(16, True, STATS)
    base = Items(STATS)

    def perturbed(batch_size):
        dataset = PerturbedDataset(base, perturbation(**{p: {"p": 0.5} for p in PARTS}), 0, preprocessing)
        loaded = list(DataLoader(dataset, batch_size=batch_size, collate_fn=collated))
        return {key: torch.cat([b[key] for b in loaded]) for key in loaded[0]}

    one, four, again = perturbed(1), perturbed(4), perturbed(1)
    assert not changed(one, four) and not changed(one, again)
    assert changed(base.images, one) == {BACKGROUND, COMPOSITE}
    assert torch.equal(one[BACKGROUND][:, 0], one[BACKGROUND][:, 2])  # still gray
    plain = unnormalised(one, STATS)[BACKGROUND]
    assert plain.min() >= -1e-6 and plain.max() <= 1 + 1e-6  # perturbed unnormalised, normalised again
    other = PerturbedDataset(base, perturbation(**{p: {"p": 0.5} for p in PARTS}), 1, preprocessing)
    assert changed(one, other.__getitems__(list(range(6))))


@pytest.mark.parametrize(
    ("part", "values", "message"),
    [
        ("noise", {"p": 1.5}, r"data.perturbation.noise.p=1.5: expected a number 0..1"),
        ("shadow", {"offset": 2.5}, r"data.perturbation.shadow.offset=2.5: expected a whole number"),
        ("misalign", {"translate": -0.1}, r"data.perturbation.misalign.translate=-0.1"),
        ("flip", {"q": 1}, r"data.perturbation.flip: expected keys p, got p, q"),
    ],
)
def test_bad_values_name_their_key(part, values, message):
    with pytest.raises(ConfigError, match=message):
        perturbation(**{part: values})


class SkippingItems(Items):
    """Items whose sample 2 is bad, skipped as ``data.on_bad_sample=skip`` does (a batch of it alone raises)."""

    def batch(self, indices):
        good = [i for i in indices if i != 2]
        if not good:
            raise ValueError("every sample of a batch was bad")
        return super().batch(good)


def test_perturbed_dataset_keeps_each_samples_perturbation_when_samples_are_skipped():
    dataset = PerturbedDataset(SkippingItems(None), perturbation(noise={"p": 1.0}), 0, Preprocessing(16, True, None))
    batch = dataset.__getitems__([1, 2, 3])
    assert len(batch[BACKGROUND]) == 2
    assert torch.equal(batch[BACKGROUND][1], dataset[3][BACKGROUND])
    assert torch.equal(batch[BACKGROUND][0], dataset[1][BACKGROUND])
