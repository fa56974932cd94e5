"""Tests of ood.data: registry, real file formats (made small in tmp_path), checksums and missing-file errors,
the batched GPU-style augmentation (against torchvision), the Loader, and the synthetic-set cache.

Real CIFAR files are used where ../shared/data sits beside the checkout (skipped otherwise)."""
from __future__ import annotations

import io
import pickle
import subprocess
import sys
import tarfile
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import ood
from ood import data
from ood.data import fetching, registry
from ood.data.arrays import crop_flip

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------- helpers

@pytest.fixture(autouse=True)
def _no_shared(monkeypatch, tmp_path):
    """Keep the loaders from reaching the real ../shared/data (e.g. extracting the TinyImageNet archive)."""
    monkeypatch.setattr(fetching, "SHARED_DATA", tmp_path / "no-shared")


def trust_files(monkeypatch, name: str, root: Path) -> None:
    """Replace the registry checksums of ``name``'s files present under ``root`` by their actual md5 (fake files)."""
    info = data.DATASETS[name]
    files = tuple(replace(f, checksum=f"md5:{data.file_checksum(root / f.path)}") if (root / f.path).is_file() else f
                  for f in info.files)
    monkeypatch.setitem(data.DATASETS, name, replace(info, files=files))


def rand_images(n, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def save_png_tree(folder: Path, arrays, sub="test", ext=".png"):
    from PIL import Image

    (folder / sub).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(arrays):
        p = folder / sub / f"img_{i:03d}{ext}"
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def write_cifar100(root: Path, n=30, seed=0):
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    x = rand_images(n, seed=seed)
    fine = list(np.arange(n) % 100)
    entry = {"data": x.transpose(0, 3, 1, 2).reshape(n, 3072), "fine_labels": fine, "coarse_labels": [0] * n}
    (base / "test").write_bytes(pickle.dumps(entry, protocol=2))
    names = [f"class{i}" for i in range(100)]
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": []}, protocol=2))
    return x, fine, names


# ---------------------------------------------------------------------------------------------- registry

def test_registry_entries_are_complete():
    for name, info in data.DATASETS.items():
        assert info.name == name
        assert info.kind in ("id", "ood", "aux"), name
        assert info.citation and info.preprocessing, name
        for f in info.files:
            if f.checksum is not None:
                algo, hexd = f.checksum.split(":")
                assert (algo, len(hexd)) in (("md5", 32), ("sha256", 64)), (name, f.checksum)
                int(hexd, 16)
            assert f.source, (name, f.path)
        assert data.describe(name) and "\n" not in data.describe(name)
        assert name in data.describe(name, full=True)
    for need in ["synthetic", "synthetic-backgrounds", "synthetic-novel-objects", "synthetic-textures",
                 "synthetic-noise", "synthetic-aux", "cifar10", "cifar100", "svhn", "textures", "places365", "lsun-c",
                 "lsun-r", "isun", "inaturalist", "sun", "places", "imagenet-textures", "imagenet", "300k-random",
                 "tinyimagenet32"]:
        assert need in data.DATASETS
    assert "re-encoded" in data.describe("tinyimagenet32") and "stand-in" in data.describe("tinyimagenet32", full=True)


def test_registry_checksums_match_torchvision_source():
    import torchvision.datasets as tvd

    def md5_of(name, path):
        return next(f.checksum for f in data.DATASETS[name].files if f.path == path)

    for fname, h in (tvd.CIFAR10.train_list + tvd.CIFAR10.test_list
                     + [[tvd.CIFAR10.meta["filename"], tvd.CIFAR10.meta["md5"]]]):
        assert md5_of("cifar10", f"cifar-10-batches-py/{fname}") == f"md5:{h}"
    assert md5_of("cifar10", tvd.CIFAR10.filename) == f"md5:{tvd.CIFAR10.tgz_md5}"
    for fname, h in (tvd.CIFAR100.train_list + tvd.CIFAR100.test_list
                     + [[tvd.CIFAR100.meta["filename"], tvd.CIFAR100.meta["md5"]]]):
        assert md5_of("cifar100", f"cifar-100-python/{fname}") == f"md5:{h}"
    assert md5_of("cifar100", "cifar-100-python/test") == "md5:f0ef6b0ae62326f3e7ffdfab6717acfc"
    url, fname, h = tvd.SVHN.split_list["test"]
    svhn = data.DATASETS["svhn"].files[0]
    assert (svhn.url, Path(svhn.path).name, svhn.checksum) == (url, fname, f"md5:{h}")
    assert data.DATASETS["textures"].files[0].checksum == f"md5:{tvd.DTD._MD5}"
    assert data.DATASETS["textures"].files[0].url == tvd.DTD._URL
    assert data.DATASETS["places365"].files[0].checksum == f"md5:{tvd.Places365._IMAGES_META[('test', True)][1]}"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this checkout")
def test_tinyimagenet_checksum_matches_shared_sha256_file():
    want = (SHARED / "tinyimagenet32-train.sha256").read_text().split()[0]
    assert data.DATASETS["tinyimagenet32"].files[0].checksum == f"sha256:{want}"


def test_bad_names_splits_and_sizes_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'.*cifar10.*svhn"):
        data.load("cifar11", root=tmp_path)
    with pytest.raises(ValueError, match="unknown split 'val'.*train, test"):
        data.load("cifar10", "val", root=tmp_path)
    with pytest.raises(ValueError, match="load_folder"):
        data.load("inaturalist", root=tmp_path)
    with pytest.raises(ValueError, match="allowed: 32"):
        data.load("svhn", image_size=64, root=tmp_path)
    with pytest.raises(ValueError, match="n=0"):
        data.load("svhn", n=0, root=tmp_path)
    with pytest.raises(ValueError, match="not an image folder"):
        data.load_folder("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.describe("nope")


# ---------------------------------------------------------------------------------------------- ArrayDataset

def _toy(n=20):
    return data.ArrayDataset("toy", torch.from_numpy(rand_images(n)).permute(0, 3, 1, 2).contiguous(), torch.arange(n))


def test_array_dataset_checks_and_subset():
    with pytest.raises(ValueError, match="uint8"):
        data.ArrayDataset("x", torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        data.ArrayDataset("x", torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    ds = _toy(20)
    s1, s2, s3 = ds.subset(7, seed=1), ds.subset(7, seed=1), ds.subset(7, seed=2)
    assert len(s1) == 7 and torch.equal(s1.labels, s2.labels) and not torch.equal(s1.labels, s3.labels)
    assert torch.all(s1.labels[1:] > s1.labels[:-1])                        # distinct, original order
    assert torch.equal(s1.images, ds.images[s1.labels])                     # images follow their labels
    with pytest.raises(ValueError, match="1..20"):
        ds.subset(21)
    moved = ds.to("cpu")
    assert torch.equal(moved.images, ds.images) and len(moved) == 20


# ---------------------------------------------------------------------------------------------- augmentation

def _coded(pad_h=32, pad_w=32):
    """An image whose channel 0 is row+1 and channel 1 is column+1, so a crop reveals its offsets."""
    x = torch.zeros(1, 3, pad_h, pad_w, dtype=torch.uint8)
    x[0, 0] = (torch.arange(pad_h) + 1)[:, None]
    x[0, 1] = (torch.arange(pad_w) + 1)[None, :]
    return x


def _offsets(out: torch.Tensor, pad: int = 4):
    """Recover (top, left, flipped) of each crop of a coded image (see _coded)."""
    tops, lefts, flips = [], [], []
    W = out.shape[-1]
    for o in out:
        r = o[0, :, :].max(dim=1).values.long()       # per output row: original row+1 (0 in the padding)
        i = int(torch.nonzero(r)[0])
        tops.append(int(r[i]) - 1 + pad - i)
        c = o[1].max(dim=0).values.long()              # per output column: original column+1
        js = torch.nonzero(c).flatten()
        flipped = len(js) > 1 and int(c[js[1]]) < int(c[js[0]])
        j = int(js[0])
        jj = (W - 1 - j) if flipped else j             # position in the unflipped crop
        lefts.append(int(c[j]) - 1 + pad - jj)
        flips.append(flipped)
    return np.array(tops), np.array(lefts), np.array(flips)


def test_augment_shape_dtype_identity_and_determinism():
    x = torch.from_numpy(rand_images(16)).permute(0, 3, 1, 2).contiguous()
    y = data.augment_batch(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(data.augment_batch(x, pad=0, flip=False), x)
    assert torch.equal(y, data.augment_batch(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(y, data.augment_batch(x, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="B, C, H, W"):
        data.augment_batch(x[0])


def test_flip_only_matches_torch_flip_where_flagged():
    x = torch.from_numpy(rand_images(64)).permute(0, 3, 1, 2).contiguous()
    flag = torch.arange(64) % 3 == 0
    zeros = torch.zeros(64, dtype=torch.long)
    out = crop_flip(x, zeros, zeros, flag, pad=0)
    assert torch.equal(out[flag], torch.flip(x[flag], dims=[-1])) and torch.equal(out[~flag], x[~flag])
    out = data.augment_batch(x, torch.Generator().manual_seed(3), pad=0)     # random flags: each is x or its mirror
    is_same = (out == x).flatten(1).all(1)
    is_flip = (out == torch.flip(x, dims=[-1])).flatten(1).all(1)
    assert torch.all(is_same ^ is_flip) and 16 < int(is_flip.sum()) < 48


def test_fixed_offset_crop_equals_torchvision_crop_of_padded_image():
    import torchvision.transforms.functional as TF

    x = torch.from_numpy(rand_images(1, seed=5)).permute(0, 3, 1, 2).contiguous()
    for top in range(9):
        for left in range(9):
            for flip in (False, True):
                ours = crop_flip(x, torch.tensor([top]), torch.tensor([left]), torch.tensor([flip]), pad=4)[0]
                ref = TF.crop(TF.pad(x[0], 4), top, left, 32, 32)
                assert torch.equal(ours, TF.hflip(ref) if flip else ref), (top, left, flip)


def test_offset_and_flip_distribution_matches_torchvision_randomcrop_flip():
    import torchvision.transforms as T

    n = 9000
    out = data.augment_batch(_coded().expand(n, -1, -1, -1), torch.Generator().manual_seed(0))
    top, left, flip = _offsets(out)
    assert top.min() >= 0 and top.max() <= 8 and left.min() >= 0 and left.max() <= 8
    for v in (top, left):
        freq = np.bincount(v, minlength=9) / n
        assert np.all(np.abs(freq - 1 / 9) < 0.02), freq              # 1/9 +- ~6 sd
    assert abs(flip.mean() - 0.5) < 0.03
    assert abs(np.corrcoef(top, left)[0, 1]) < 0.05                    # drawn independently
    # torchvision's per-image transforms, read back the same way
    torch.manual_seed(0)
    tv = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    ref = torch.stack([tv(_coded()[0]) for _ in range(3000)])
    rtop, rleft, rflip = _offsets(ref)
    for ours, theirs in ((top, rtop), (left, rleft)):
        tvd = 0.5 * np.abs(np.bincount(ours, minlength=9) / n - np.bincount(theirs, minlength=9) / 3000).sum()
        assert tvd < 0.06, tvd
    assert abs(flip.mean() - rflip.mean()) < 0.05


# ---------------------------------------------------------------------------------------------- Loader

def test_loader_epochs_cover_every_index_once_and_reshuffle():
    ds = _toy(23)
    loader = data.Loader(ds, 5, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 5 and len(data.Loader(ds, 5, drop_last=True)) == 4
    epochs = []
    for _ in range(2):
        batches = list(loader)
        ys = torch.cat([y for _, y in batches])
        assert sorted(ys.tolist()) == list(range(23))
        for x, y in batches:
            assert x.dtype == torch.float32 and torch.allclose(x * 255, ds.images[y].float())
        epochs.append(ys)
    assert not torch.equal(epochs[0], epochs[1])
    again = data.Loader(ds, 5, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([y for _, y in again]), epochs[0])
    plain = torch.cat([y for _, y in data.Loader(ds, 4)])
    assert torch.equal(plain, torch.arange(23))
    dropped = torch.cat([y for _, y in data.Loader(ds, 5, shuffle=True, drop_last=True)])
    assert len(dropped) == 20 and len(set(dropped.tolist())) == 20


def test_loader_augments_and_rejects_bad_batch_size():
    ds = _toy(8)
    g = torch.Generator().manual_seed(1)
    (x, y), = list(data.Loader(ds, 8, augment=True, generator=g))
    assert x.shape == (8, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert not torch.allclose(x * 255, ds.images.float())
    with pytest.raises(ValueError, match="batch_size=0"):
        data.Loader(ds, 0)


# ---------------------------------------------------------------------------------------------- synthetic

@pytest.fixture
def fake_synthetic(monkeypatch):
    mod = types.ModuleType("ood.synthetic")
    mod.CLASSES = tuple(f"class{i}" for i in range(10))
    mod.calls = []

    def generate(set_name, n, seed=0):
        mod.calls.append((set_name, n, seed))
        rng = np.random.default_rng([seed, len(set_name)])
        y = rng.integers(0, 10, n) if set_name in ("train", "test") else np.full(n, -1)
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y.astype(np.int64)

    mod.generate = generate
    monkeypatch.setitem(sys.modules, "ood.synthetic", mod)
    monkeypatch.setattr(ood, "synthetic", mod, raising=False)
    return mod


def test_synthetic_load_caches_and_rereads_identical_bytes(tmp_path, fake_synthetic):
    a = data.load("synthetic", "train", tmp_path, seed=3, n=50)
    cache = tmp_path / "synthetic" / "train-s3-n50.npz"
    assert cache.is_file() and len(fake_synthetic.calls) == 1
    assert a.images.shape == (50, 3, 32, 32) and a.images.dtype == torch.uint8 and a.classes == fake_synthetic.CLASSES
    x, y = fake_synthetic.generate("train", 50, seed=3)
    assert torch.equal(a.images, torch.from_numpy(x).permute(0, 3, 1, 2)) and torch.equal(a.labels, torch.from_numpy(y))
    fake_synthetic.calls.clear()
    b = data.load("synthetic", "train", tmp_path, seed=3, n=50)
    assert fake_synthetic.calls == []                                       # read from the cache
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes() and torch.equal(a.labels, b.labels)
    assert not list((tmp_path / "synthetic").glob("*.tmp"))


def test_synthetic_corrupt_cache_is_regenerated_and_sizes(tmp_path, fake_synthetic):
    data.load("synthetic-noise", "test", tmp_path, n=10)
    cache = tmp_path / "synthetic" / "noise-s0-n10.npz"
    cache.write_bytes(cache.read_bytes()[:100])                             # truncated
    with pytest.warns(UserWarning, match="regenerating"):
        ds = data.load("synthetic-noise", "anything: split ignored", tmp_path, n=10)
    assert len(ds) == 10 and ds.classes is None and torch.all(ds.labels == -1) and len(fake_synthetic.calls) == 2
    assert np.load(cache)["x"].shape == (10, 32, 32, 3)
    fake_synthetic.calls.clear()
    ds = data.load("synthetic-novel-objects", root=tmp_path)
    assert fake_synthetic.calls == [("novel-objects", data.SYNTHETIC_SIZES["novel-objects"], 0)]
    assert data.SYNTHETIC_SIZES == {"train": 10000, "test": 2000, "backgrounds": 2000, "novel-objects": 2000,
                                    "textures": 2000, "noise": 2000, "aux": 10000}


# ---------------------------------------------------------------------------------------------- CIFAR

def test_cifar100_test_only_reader(tmp_path, monkeypatch):
    x, fine, names = write_cifar100(tmp_path)
    with pytest.raises(data.ChecksumError) as e:            # fake file: fails the official md5, is not used
        data.load("cifar100", "test", tmp_path)
    msg = str(e.value)
    assert "f0ef6b0ae62326f3e7ffdfab6717acfc" in msg and data.file_checksum(tmp_path / "cifar-100-python/test") in msg
    assert "not used" in msg and "\n" not in msg
    trust_files(monkeypatch, "cifar100", tmp_path)
    ds = data.load("cifar100", "test", tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert ds.labels.tolist() == fine and ds.classes == tuple(names)


def test_cifar_missing_files_fail_at_once_with_one_line(tmp_path):
    with pytest.raises(data.DataMissingError) as e:
        data.load("cifar10", "train", tmp_path)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError) and "\n" not in msg
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in msg
    with pytest.raises(data.DataMissingError, match=r"cifar-10-batches-py/test_batch \(and 1 more"):
        data.load("cifar10", "test", tmp_path)   # the test split needs only test_batch and batches.meta
    assert ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
            and "c58f30108f718f92721af3b95e74349a" in msg)
    with pytest.raises(data.DataMissingError,
                       match=r"cifar-100-python/test.*cifar-100-python\.tar\.gz.*eb9058c3a382ffc7"):
        data.load("cifar100", "test", tmp_path)


def test_cifar10_corrupt_files_and_archive_fail_their_checksum(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for f in data.DATASETS["cifar10"].files[1:]:
        (tmp_path / f.path).write_bytes(b"not the real batch")
    with pytest.raises(data.ChecksumError,
                       match=r"data_batch_1 has md5 .*expected c99cafc152244af753f735de768cd75f.*not used"):
        data.load("cifar10", "train", tmp_path)
    with pytest.raises(data.ChecksumError, match=r"test_batch has md5 .*expected 40351d587109b95175f43aff81a1287e"):
        data.load("cifar10", "test", tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "cifar-10-python.tar.gz").write_bytes(b"truncated")
    with pytest.raises(data.ChecksumError, match="cifar-10-python.tar.gz has md5"):
        data.load("cifar10", "test", other)


@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory):
    """The official CIFAR files from ../shared/data, unpacked (two xz streams at a time) into a temporary root."""
    if not (SHARED / "unpack").is_file():
        pytest.skip("../shared/data (official CIFAR files) is not beside this checkout")
    dest = tmp_path_factory.mktemp("cifar")
    c10 = [f.path for f in data.DATASETS["cifar10"].files[1:]]         # torchvision checks all 7 even for test
    groups = [c10[:3] + ["cifar-100-python/test", "cifar-100-python/meta"], c10[3:]]
    procs = [subprocess.Popen([str(SHARED / "unpack"), str(dest), *g], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for g in groups]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    return dest


@pytest.mark.slow
def test_real_cifar10_through_torchvision_integrity_check(real_cifar):
    ds = data.load("cifar10", "test", real_cifar)            # download=False: offline, torchvision checks the md5s
    assert ds.images.shape == (10000, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.classes[0] == "airplane" and ds.classes[-1] == "truck" and len(ds.classes) == 10
    raw = pickle.loads((real_cifar / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="latin1")
    assert torch.equal(ds.images[0].flatten(), torch.from_numpy(np.asarray(raw["data"][0], dtype=np.uint8)))
    train = data.load("cifar10", "train", real_cifar)
    assert len(train) == 50000 and torch.bincount(train.labels).tolist() == [5000] * 10


def test_real_cifar100_test_only_and_truncated_copy(real_cifar, tmp_path):
    ds = data.load("cifar100", "test", real_cifar)
    assert ds.images.shape == (10000, 3, 32, 32) and torch.bincount(ds.labels).tolist() == [100] * 100
    assert ds.classes[0] == "apple" and len(ds.classes) == 100
    bad = tmp_path / "cifar-100-python"
    bad.mkdir()
    (bad / "meta").write_bytes((real_cifar / "cifar-100-python" / "meta").read_bytes())
    (bad / "test").write_bytes((real_cifar / "cifar-100-python" / "test").read_bytes()[:-1000])
    with pytest.raises(data.ChecksumError, match="expected f0ef6b0ae62326f3e7ffdfab6717acfc.*truncated"):
        data.load("cifar100", "test", tmp_path)


# ---------------------------------------------------------------------------------------------- SVHN, 300K

def test_svhn_mat_file(tmp_path, monkeypatch):
    import scipy.io
    import torchvision

    x = rand_images(12)
    (tmp_path / "svhn").mkdir()
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat",
                     {"X": x.transpose(1, 2, 3, 0), "y": np.arange(1, 13)[:, None] % 10 + 1})
    with pytest.raises(data.ChecksumError, match="eb5a983be6a315427106f1b164d9cef3"):
        data.load("svhn", root=tmp_path)
    with pytest.raises(data.DataMissingError, match=r"svhn/test_32x32\.mat.*ufldl.stanford.edu.*eb5a983be6a3"):
        data.load("svhn", root=tmp_path / "empty")
    trust_files(monkeypatch, "svhn", tmp_path)
    url, fname, _ = torchvision.datasets.SVHN.split_list["test"]
    monkeypatch.setitem(torchvision.datasets.SVHN.split_list, "test",
                        [url, fname, data.file_checksum(tmp_path / "svhn" / "test_32x32.mat")])
    ds = data.load("svhn", "test", tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(x).permute(0, 3, 1, 2)) and torch.all(ds.labels == -1)


def test_300k_random_npy_is_memory_mapped(tmp_path, monkeypatch):
    x = rand_images(40)
    np.save(tmp_path / "300K_random_images.npy", x)
    with pytest.raises(data.ChecksumError, match="64ca64357de98351f28454274a112dc3"):
        data.load("300k-random", "train", tmp_path)
    with pytest.raises(data.DataMissingError, match=r"300K_random_images\.npy.*hendrycks.*64ca64357de9"):
        data.load("300k-random", "train", tmp_path / "empty")
    trust_files(monkeypatch, "300k-random", tmp_path)
    ds = data.load("300k-random", "train", tmp_path)
    assert ds.images.shape == (40, 3, 32, 32) and torch.equal(ds.images, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert torch.all(ds.labels == -1)
    sub = data.load("300k-random", "train", tmp_path, n=10, seed=4)
    assert torch.equal(sub.images, ds.subset(10, seed=4).images)
    np.save(tmp_path / "300K_random_images.npy", x[:, :16])                # wrong shape
    trust_files(monkeypatch, "300k-random", tmp_path)
    with pytest.raises(data.ChecksumError, match=r"expected uint8 \(N, 32, 32, 3\)"):
        data.load("300k-random", "train", tmp_path)


def test_download_failure_is_a_data_missing_error(tmp_path, monkeypatch):
    import urllib.request as U

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(U, "urlopen", offline)
    with pytest.raises(data.DataMissingError,
                       match="download of https://people.eecs.berkeley.edu.*failed.*unreachable"):
        data.load("300k-random", "train", tmp_path, download=True)


# ---------------------------------------------------------------------------------------------- image folders

def test_image_folder_sets_decode_crop_and_cache(tmp_path):
    import torchvision.transforms as T
    from PIL import Image

    r = rand_images(5, seed=1)
    save_png_tree(tmp_path / "LSUN_resize", r, sub="LSUN_resize")          # LSUN-R: 32x32, as is
    ds = data.load("lsun-r", "test", tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(r).permute(0, 3, 1, 2)) and torch.all(ds.labels == -1)
    c = rand_images(4, 36, 36, seed=2)
    save_png_tree(tmp_path / "LSUN", c)                                     # LSUN-C: 36x36 -> center 32x32
    ds = data.load("lsun-c", "test", tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(c[:, 2:34, 2:34]).permute(0, 3, 1, 2))
    t = rand_images(3, 60, 45, seed=3)
    paths = save_png_tree(tmp_path / "dtd" / "images", t, sub="banded")     # DTD: shorter side 32 + center crop
    ds = data.load("textures", "test", tmp_path)
    tf = T.Compose([T.Resize(32), T.CenterCrop(32), T.PILToTensor()])
    assert torch.equal(ds.images, torch.stack([tf(Image.open(p).convert("RGB")) for p in paths]))
    assert data.load("textures", "test", tmp_path, image_size=16).images.shape == (3, 3, 16, 16)
    cache = tmp_path / "dtd" / "images" / "test-uint8.npy"                  # the cache is what is read next time
    np.save(cache, np.zeros((3, 32, 32, 3), np.uint8))
    assert int(data.load("textures", "test", tmp_path).images.sum()) == 0
    np.save(cache, np.zeros((2, 32, 32, 3), np.uint8))                      # stale (wrong count): decoded again
    assert torch.equal(data.load("textures", "test", tmp_path).images, ds.images)


def test_image_folder_missing_corrupt_and_extracted_archive(tmp_path, monkeypatch):
    with pytest.raises(data.DataMissingError) as e:
        data.load("isun", "test", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "iSUN.tar.gz") in msg and "dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz" in msg
    assert "be77b0f2c26fda898afac5f99645ee70" in msg and "\n" not in msg
    imgs = rand_images(3, seed=7)
    src = tmp_path / "src"
    save_png_tree(src / "iSUN", imgs, sub="iSUN_patches")
    with tarfile.open(tmp_path / "iSUN.tar.gz", "w:gz") as tar:
        tar.add(src / "iSUN", arcname="iSUN")
    with pytest.raises(data.ChecksumError, match="iSUN.tar.gz has md5 .* expected be77b0f2c26fda898afac5f99645ee70"):
        data.load("isun", "test", tmp_path)
    assert not (tmp_path / "iSUN").exists()                                 # not used: nothing extracted
    trust_files(monkeypatch, "isun", tmp_path)
    ds = data.load("isun", "test", tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(imgs).permute(0, 3, 1, 2))
    assert (tmp_path / "iSUN" / "iSUN_patches").is_dir()
    (tmp_path / "iSUN" / "iSUN_patches" / "img_001.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "iSUN" / "test-uint8.npy").unlink()
    with pytest.raises(data.ChecksumError, match="img_001.png cannot be decoded"):
        data.load("isun", "test", tmp_path)


def test_places365_subset_rules(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "PLACES365_N", 5)
    imgs = rand_images(8, 40, 40, seed=9)
    paths = save_png_tree(tmp_path / "places365", imgs, sub="test_256")
    a = data.load("places365", "test", tmp_path)
    assert len(a) == 5
    pick = np.sort(np.random.default_rng(registry.PLACES365_SAMPLE_SEED).choice(8, 5, replace=False))
    (tmp_path / "places365" / "test-uint8.npy").unlink()
    (tmp_path / "places365" / "places365_test_list.txt").write_text("\n".join(paths[i].name for i in pick) + "\n")
    assert torch.equal(data.load("places365", "test", tmp_path).images, a.images)   # same images as the listed ones
    (tmp_path / "places365" / "test-uint8.npy").unlink()
    (tmp_path / "places365" / "places365_test_list.txt").write_text("img_000.png\nimg_999.png\n")
    with pytest.raises(data.DataMissingError, match="img_999.png"):
        data.load("places365", "test", tmp_path)


def test_tinyimagenet32_tree_cache_and_archive(tmp_path, monkeypatch):
    from PIL import Image

    src = tmp_path / "src"
    paths = []
    for w, wnid in enumerate(["n01443537", "n01629819"]):
        d = src / "tinyimagenet32" / "train" / wnid
        d.mkdir(parents=True)
        for i, a in enumerate(rand_images(3, seed=w)):
            paths.append(d / f"{wnid}_{i}.JPEG")
            Image.fromarray(a).save(paths[-1], format="JPEG")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        tar.add(src / "tinyimagenet32", arcname="tinyimagenet32")
    shared = tmp_path / "shared"                                          # the archive found beside the checkout
    shared.mkdir()
    (shared / "tinyimagenet32-train.tar.xz").write_bytes(buf.getvalue())
    monkeypatch.setattr(fetching, "SHARED_DATA", shared)
    root = tmp_path / "root"
    with pytest.raises(data.ChecksumError, match="sha256 .* expected 78b12ee3c29d"):
        data.load("tinyimagenet32", "train", root)
    info = data.DATASETS["tinyimagenet32"]
    want = "sha256:" + data.file_checksum(shared / "tinyimagenet32-train.tar.xz", "sha256")
    monkeypatch.setitem(data.DATASETS, "tinyimagenet32", replace(info, files=(replace(info.files[0], checksum=want),)))
    ds = data.load("tinyimagenet32", "train", root)
    ref = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    assert torch.equal(ds.images, ref) and torch.all(ds.labels == -1)
    cache = root / "tinyimagenet32" / "train-uint8.npy"
    assert cache.is_file()
    np.save(cache, np.full((6, 32, 32, 3), 7, np.uint8))
    assert torch.all(data.load("tinyimagenet32", "train", root).images == 7)   # read from the cache


def test_load_folder_imagefolder_and_missing(tmp_path):
    save_png_tree(tmp_path / "iNaturalist", rand_images(3, 48, 40), sub="images")
    ds = data.load_folder("inaturalist", tmp_path)
    assert len(ds) == 3 and ds[0][0].size == (40, 48)                      # full resolution
    with pytest.raises(data.DataMissingError, match=r"imagenet/val.*image-net.org"):
        data.load_folder("imagenet", tmp_path)
    with pytest.raises(data.DataMissingError, match=r"SUN\.tar\.gz.*huangrui/imagenet_ood_dataset/SUN\.tar\.gz"):
        data.load_folder("sun", tmp_path)


def test_lsun_c_as_stored_for_the_energy_protocol_and_cropped_by_default(tmp_path):
    """lsun-c-36 keeps LSUN-C's 36x36 images as the energy_ood code feeds them; lsun-c crops their centre 32x32 as
    GReg's detect.py does (oracle: numpy slicing of the written pixels; PNG is lossless)."""
    import numpy as np
    from PIL import Image

    from ood.data import load

    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, (5, 36, 36, 3), dtype=np.uint8)
    (tmp_path / "LSUN" / "test").mkdir(parents=True)
    for i, a in enumerate(pix):
        Image.fromarray(a).save(tmp_path / "LSUN" / "test" / f"{i}.png")
    raw, crop = load("lsun-c-36", root=tmp_path), load("lsun-c", root=tmp_path)
    assert tuple(raw.images.shape) == (5, 3, 36, 36) and tuple(crop.images.shape) == (5, 3, 32, 32)
    np.testing.assert_array_equal(raw.images.permute(0, 2, 3, 1).numpy(), pix)
    np.testing.assert_array_equal(crop.images.permute(0, 2, 3, 1).numpy(), pix[:, 2:34, 2:34])
