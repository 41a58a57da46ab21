import io
import itertools
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.datamodule import EVAL_VARIANTS, EpochSampler, ResumableLoader
from fgbg.data.index import sample_id
from fgbg.errors import ConfigError
from tests.helpers.configs import compose_config


def datamodule_from_config(data_dir, *overrides):
    cfg = compose_config("train", overrides=[f"data.data_dir={data_dir}", "data.strategy=40k", "data.num_workers=0", *overrides])
    return instantiate(cfg.data)


def test_batches_follow_the_contract(small_dataset):
    dm = datamodule_from_config(small_dataset, "data.batch_size=4")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch[BACKGROUND].shape == batch[COMPOSITE].shape == (4, 3, 64, 64)
    assert batch[MASK].shape == batch[DEPTH].shape == (4, 1, 64, 64)
    assert set(batch[MASK].unique().tolist()) <= {0.0, 1.0}
    assert 0 <= batch[DEPTH].min() and batch[DEPTH].max() <= 1
    # Grayscale(3) as in the source document: the three channels are equal.
    assert torch.equal(batch[COMPOSITE][:, 0], batch[COMPOSITE][:, 2])


def test_sample_matches_the_zip_images(small_dataset):
    dm = datamodule_from_config(small_dataset, "data.image_size=160", "data.grayscale=false")
    dm.setup("fit")
    dataset = dm.parts["val"]
    sample = dataset.samples[0]
    item = dataset[0]
    with zipfile.ZipFile(small_dataset / "batch1_images.zip") as zf:
        stem = sample_id(sample).stem()
        composite = np.asarray(Image.open(io.BytesIO(zf.read(f"fg_bg_jpg/fg_bg_{stem}.jpg"))))
        mask = np.asarray(Image.open(io.BytesIO(zf.read(f"mask_black_jpg/bg_mask_{stem}.jpg")))) > 127
    assert np.abs(item[COMPOSITE].permute(1, 2, 0).numpy() * 255 - composite).mean() < 2
    assert np.array_equal(item[MASK][0].numpy() > 0.5, mask)


def test_normalisation_uses_the_category_stats(small_dataset):
    plain = datamodule_from_config(small_dataset)
    normed = datamodule_from_config(small_dataset, "data.normalize=true", "data/stats=document")
    plain.setup(), normed.setup()
    a, b = plain.parts["train"][0], normed.parts["train"][0]
    assert torch.allclose(b[BACKGROUND], (a[BACKGROUND] - 0.739088) / 0.265235, atol=1e-5)
    assert torch.allclose(b[COMPOSITE], (a[COMPOSITE] - 0.729304) / 0.271675, atol=1e-5)
    assert torch.equal(a[DEPTH], b[DEPTH])  # targets are never normalised


def test_two_workers_read_the_same_samples_and_hand_each_batch_over_in_one_storage(small_dataset):
    dm = datamodule_from_config(small_dataset, "data.batch_size=8")
    dm.setup()

    def read():  # each held-out loader's batches, the perturbed one's included
        return [batch for loader in dm.val_dataloader() for batch in loader]

    serial = read()
    dm.num_workers = 2
    parallel = read()
    assert len(serial) == len(parallel)
    for one, other in zip(serial, parallel):
        assert one.keys() == other.keys() == {BACKGROUND, COMPOSITE, MASK, DEPTH}
        assert all(torch.equal(one[key], other[key]) for key in one)
        # One shared storage crossed from the worker, not one per tensor.
        assert len({value.untyped_storage().data_ptr() for value in other.values()}) == 1


def test_corrupt_member_names_zip_and_member(small_dataset, tmp_path):
    src = small_dataset / "batch1_images.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_path / "batch1_images.zip", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, data[: len(data) // 3] if info.filename.startswith("fg_bg_jpg/") else data)
    dm = datamodule_from_config(tmp_path)
    dm.setup()
    with pytest.raises(ValueError, match=r"batch1_images.zip:fg_bg_jpg/fg_bg_.*\.jpg: cannot decode JPEG"):
        dm.parts["train"][0]


def _rewrite_zip(src, dst, change):
    """Copy zip ``src`` to ``dst`` with each member's bytes passed through ``change(name, data)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, change(info.filename, zin.read(info)))


def test_bad_samples_are_skipped_and_counted_when_asked(small_dataset, tmp_path):
    broken = "fg_bg_jpg/fg_bg_1_"  # every composite of foreground 1
    _rewrite_zip(small_dataset / "batch1_images.zip", tmp_path / "batch1_images.zip",
                 lambda name, data: data[:50] if name.startswith(broken) else data)
    dm = datamodule_from_config(tmp_path, "data.on_bad_sample=skip", "data.batch_size=64")
    dm.setup()
    dataset = dm.parts["train"]
    bad = int((dataset.samples["fg"] == 1).sum())
    assert bad > 0
    sizes = [len(batch[COMPOSITE]) for batch in dm.train_dataloader()]
    assert sum(sizes) == len(dataset) - bad and dataset.skipped == bad


def test_wrong_size_member_is_refused_by_name(small_dataset, tmp_path):
    small = io.BytesIO()
    Image.new("RGB", (100, 100)).save(small, format="JPEG")
    _rewrite_zip(small_dataset / "batch1_images.zip", tmp_path / "batch1_images.zip",
                 lambda name, data: small.getvalue() if name.startswith("fg_bg_jpg/") else data)
    dm = datamodule_from_config(tmp_path)
    dm.setup()
    with pytest.raises(ValueError, match=r"batch1_images.zip:fg_bg_jpg/fg_bg_.*: 100x100 pixels, expected 160x160"):
        dm.parts["train"][0]



def _ids(batches) -> list[int]:
    return [int(i) for batch in batches for i in batch]


@pytest.mark.parametrize("num_workers", [0, 2])  # workers read the sampler ahead of the batches taken
def test_training_order_follows_seed_and_epoch_and_resumes_mid_epoch(num_workers):
    def loader(seed=0):
        return ResumableLoader(range(20), sampler=EpochSampler(range(20), seed), batch_size=4, num_workers=num_workers)

    first = loader()
    epoch0 = _ids(first)
    assert sorted(epoch0) == list(range(20)) and epoch0 == _ids(loader()) and epoch0 != _ids(loader(seed=1))
    first.sampler.set_epoch(1)
    assert _ids(first) != epoch0  # a new permutation per epoch

    stopped = loader()
    taken = list(itertools.islice(iter(stopped), 2))
    assert stopped.state_dict() == {"epoch": 0, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(stopped.state_dict())
    resumed.sampler.set_epoch(0)  # Lightning sets the epoch again after loading: the position stays
    rest = iter(resumed)
    assert _ids(taken) + _ids([next(rest)]) == epoch0[:12]
    assert resumed.state_dict() == {"epoch": 0, "batches": 3}  # stopped again: counted from the epoch's start
    assert _ids(rest) == epoch0[12:]
    assert _ids(resumed) == epoch0  # a finished epoch, iterated again, starts from the top


def test_train_loader_is_resumable_and_seeded_from_the_config(small_dataset):
    dm = datamodule_from_config(small_dataset, "seed=3")
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and loader.sampler.seed == 3
    assert len(loader.sampler) == len(dm.parts["train"])


def _first_batches(loaders, count=1) -> list[dict]:
    return [batch for loader in loaders for batch in itertools.islice(loader, count)]


def test_perturbed_eval_adds_a_perturbed_loader_of_the_same_samples(small_dataset):
    dm = datamodule_from_config(small_dataset, "data.batch_size=4", "data.normalize=true")
    dm.setup()
    assert dm.eval_variants() == EVAL_VARIANTS == ("clean", "perturbed")
    for loaders in (dm.val_dataloader(), dm.test_dataloader()):
        assert len(loaders) == 2 and len(loaders[0].dataset) == len(loaders[1].dataset)
        clean, perturbed = _first_batches(loaders)
        assert torch.equal(clean[MASK], perturbed[MASK]) and torch.equal(clean[DEPTH], perturbed[DEPTH])
        assert not torch.equal(clean[BACKGROUND], perturbed[BACKGROUND])
    # The same perturbation per sample whatever the batch size, and in another data module (another run).
    dm_one = datamodule_from_config(small_dataset, "data.batch_size=1", "data.normalize=true")
    dm_one.setup()
    ones = _first_batches(dm_one.val_dataloader()[1:], 4)
    assert torch.equal(torch.cat([b[BACKGROUND] for b in ones]), _first_batches(dm.val_dataloader()[1:])[0][BACKGROUND])
    plain = datamodule_from_config(small_dataset, "data.perturbed_eval=false")
    plain.setup()
    assert plain.eval_variants() == ("clean",) and isinstance(plain.val_dataloader(), DataLoader)


def test_augment_perturbs_training_batches_only(small_dataset):
    dm = datamodule_from_config(small_dataset, "data.batch_size=4", "data.augment=true")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=False)  # validating, testing, predicting
    assert dm.on_after_batch_transfer(batch, 0) is batch
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    out = dm.on_after_batch_transfer(batch, 0)
    assert out.keys() == batch.keys() and not torch.equal(out[BACKGROUND], batch[BACKGROUND])
    assert torch.equal(out[COMPOSITE][:, 0], out[COMPOSITE][:, 2])  # gray data stays gray
    off = datamodule_from_config(small_dataset, "data.batch_size=4")
    off.trainer = SimpleNamespace(training=True)
    assert off.on_after_batch_transfer(batch, 0) is batch


def test_perturbing_without_a_perturbation_is_refused(small_dataset):
    with pytest.raises(InstantiationException) as error:
        overrides = ("data.perturbation=null", "data.augment=true", "data.perturbed_eval=false")
        datamodule_from_config(small_dataset, *overrides)
    assert isinstance(error.value.__cause__, ConfigError)
    assert str(error.value.__cause__) == "data.augment=true needs data.perturbation (e.g. data/perturbation=bgmv2)"
