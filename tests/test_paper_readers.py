"""The paper profiles' readers on toy files in the official formats (tests/toy_archives.py): CIFAR read from the
pickles after our checksum (the arrays torchvision gives), mirrors before any official URL, ``benchmark.download``,
and the test-only checksum hook ``$OOD_TEST_CHECKSUMS``."""
from __future__ import annotations

import lzma
import shutil

import pytest
import torch
import torchvision
import toy_archives

from ood import benchmark, config
from ood.data import DataMissingError, fetching, load, readers, registry


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy") / "www"
    table = toy_archives.build(folder)
    return folder, toy_archives.write_checksums(table, folder.parent / "checksums.json")


@pytest.fixture
def hooked(toy, monkeypatch, tmp_path):
    """The registry with the toy checksums applied (on a copy of DATASETS), the toy folder as the only mirror, no
    shared copies."""
    folder, checks = toy
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    monkeypatch.setattr(fetching, "SHARED_DATA", tmp_path / "no-shared")
    monkeypatch.setenv(registry.MIRRORS_ENV, str(folder))
    registry.apply_test_checksums(checks)
    return folder


def _torchvision(cls, root, train):
    """torchvision's dataset over ``root`` with its own md5 check bypassed (it knows only the official files)."""
    import torchvision.datasets.cifar as tvc

    orig = cls._check_integrity, tvc.check_integrity
    cls._check_integrity, tvc.check_integrity = (lambda self: True), (lambda *a, **k: True)
    try:
        return cls(str(root), train=train, download=False)
    finally:
        cls._check_integrity, tvc.check_integrity = orig


@pytest.mark.parametrize("name,cls", [("cifar10", torchvision.datasets.CIFAR10),
                                      ("cifar100", torchvision.datasets.CIFAR100)])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_pickles_give_torchvisions_arrays(hooked, tmp_path, name, cls, split, monkeypatch):
    monkeypatch.setattr(cls, "__init__", lambda *a, **k: pytest.fail("torchvision's class must not be used"))
    ds = load(name, split, tmp_path / "data", download=True)
    monkeypatch.undo()
    tv = _torchvision(cls, tmp_path / "data", split == "train")
    assert torch.equal(ds.images, torch.from_numpy(tv.data).permute(0, 3, 1, 2))
    assert ds.labels.tolist() == list(tv.targets) and ds.classes == tuple(tv.classes)
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous()


def test_cifar10_test_split_of_the_real_files_matches_torchvision(tmp_path):
    """On the official files beside the checkout (../shared/data), when they are there."""
    src = fetching.SHARED_DATA / "cifar-10-batches-py"
    if not (src / "test_batch.xz").is_file():
        pytest.skip(f"no official CIFAR-10 copy in {fetching.SHARED_DATA}")
    dest = tmp_path / "cifar-10-batches-py"
    dest.mkdir()
    for f in ("test_batch", "batches.meta"):
        with lzma.open(src / f"{f}.xz") as i, open(dest / f, "wb") as o:
            shutil.copyfileobj(i, o)
    ds = load("cifar10", "test", tmp_path)
    tv = _torchvision(torchvision.datasets.CIFAR10, tmp_path, False)
    assert torch.equal(ds.images, torch.from_numpy(tv.data).permute(0, 3, 1, 2)) and len(ds) == 10000
    assert ds.labels.tolist() == tv.targets and ds.classes == tuple(tv.classes)


def test_download_tries_the_mirrors_before_the_official_url(hooked, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(readers, "download_file", lambda *a, **k: calls.append(a) or pytest.fail("official URL"))
    load("cifar10", "test", tmp_path / "a", download=True)      # the archive at the mirror: no official download
    load("svhn", "test", tmp_path / "a", download=True)
    assert calls == []
    monkeypatch.setenv(registry.MIRRORS_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(readers, "download_file", lambda name, fi, root, mirrors=None: calls.append(fi.path) or
                        (_ for _ in ()).throw(DataMissingError(f"{name}: download of {fi.url} failed")))
    with pytest.raises(DataMissingError, match="download of https://www.cs.toronto.edu"):
        load("cifar10", "train", tmp_path / "b", download=True)
    assert calls == ["cifar-10-python.tar.gz"]


def test_without_download_a_file_at_no_mirror_is_one_line(hooked, tmp_path, monkeypatch):
    monkeypatch.setenv(registry.MIRRORS_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataMissingError, match="cifar10: missing .*data_batch_1") as e:
        load("cifar10", "train", tmp_path)
    assert "\n" not in str(e.value)


def test_apply_test_checksums_replaces_only_the_named_files(toy, monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    before, imagenet = registry.DATASETS["lsun-r"], registry.DATASETS["imagenet"]
    registry.apply_test_checksums(toy[1])
    assert registry.DATASETS["lsun-c"].files[0].checksum == registry.DATASETS["lsun-c-36"].files[0].checksum
    assert registry.DATASETS["lsun-c"].files[0].checksum != "md5:458a0a0ab8e5f1cb4516d7400568e460"
    assert registry.DATASETS["imagenet"] is imagenet
    assert registry.DATASETS["lsun-r"] != before and registry.DATASETS["lsun-r"].files[0].url == before.files[0].url
    bad = tmp_path / "bad.json"
    bad.write_text('{"no/such/file": "md5:00"}')
    with pytest.raises(ValueError, match="no/such/file"):
        registry.apply_test_checksums(bad)
    monkeypatch.delenv(registry.TEST_CHECKSUMS_ENV, raising=False)
    registry.apply_test_checksums()                          # unset: nothing changes


def test_benchmark_download_key_reaches_every_reader(monkeypatch):
    seen = []
    monkeypatch.setattr(benchmark, "load", lambda name, split, root, **kw: seen.append((name, kw["download"])))
    params = config.load_params()
    block = params["profiles"]["cifar10"]["benchmark"]
    assert block["download"] is True
    try:
        benchmark.load_benchmark(params, "cifar10")
    except Exception:
        pass
    assert seen and all(d is True for _, d in seen)
    block["download"] = "yes"
    with pytest.raises(config.ParamError, match="benchmark.download"):
        benchmark.load_benchmark(params, "cifar10")
    assert "download" not in params["profiles"]["synthetic"]["benchmark"]


def test_the_imagenet_auxiliary_sets_are_registry_entries():
    """The data stage describes every set it loaded by name, the ImageNet profile's auxiliary outliers included."""
    for name in benchmark.IMAGENET_AUX:
        info = registry.dataset_info(name)
        assert info.kind == "aux" and info.resolution == "full" and "\n" not in registry.describe(name)
        with pytest.raises(ValueError, match="full-resolution"):
            load(name, "train")
