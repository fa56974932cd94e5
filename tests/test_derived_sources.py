"""The derived sets of the cifar10-cpu profile (issue 29, item 1): ``dtd10`` and ``tinyimagenet32`` from their official
archives (``dtd-r1.0.1.tar.gz``, ``tiny-imagenet-200.zip``) by the transform their registry entries state.

Toy archives in the official layouts (``tests/toy_archives.py``: 12 DTD categories with odd sizes and files to ignore;
3 TinyImageNet classes of 64x64 JPEGs, one grayscale) are served by the loopback HTTP server of tests/test_mirrors.py
(127.0.0.1, no proxies, no shared copies: ``SHARED_DATA`` is an empty folder); the toy checksums reach the registry
through the test-only hook ``registry.apply_test_checksums`` (``$OOD_TEST_CHECKSUMS``) on a copy of ``DATASETS``, and
the official URLs of the copied entries point at that server, so nothing leaves the machine. Every expected image is
computed here with Pillow directly (and checked against torchvision's resize + centre crop), not by the project's
derivation code.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
import toy_archives
from PIL import Image
from test_mirrors import files_under, server  # noqa: F401  (the loopback server fixture)

from ood import benchmark, config
from ood.data import ChecksumError, DataMissingError, derive, describe, fetching, load, registry

DTD, TINY = "dtd-r1.0.1.tar.gz", "tiny-imagenet-200.zip"


def md5(b: bytes) -> str:
    return "md5:" + hashlib.md5(b).hexdigest()


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    """The toy official archives (and the CIFAR ones of toy_archives.build), written once."""
    folder = tmp_path_factory.mktemp("toys")
    dtd = toy_archives.dtd_tarball(folder / DTD)
    tiny = toy_archives.tiny_imagenet_zip(folder / TINY)
    table = toy_archives.build(folder / "paper")
    table.update({"dtd/dtd-r1.0.1.tar.gz": md5(dtd.read_bytes()), TINY: md5(tiny.read_bytes())})
    return {"dtd": dtd, "tiny": tiny, "paper": folder / "paper",
            "checks": toy_archives.write_checksums(table, folder / "checksums.json")}


@pytest.fixture
def hooked(server, toys, monkeypatch):  # noqa: F811
    """A copy of DATASETS with the toy checksums (the test-only hook) and every official URL of the derived sets and
    CIFAR pointing at ``<server>/official/<file name>``; the toy archives there and under ``<server>/mirror``, which
    is not configured as a mirror unless a test says so."""
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    registry.apply_test_checksums(toys["checks"])
    for name in ("dtd10", "tinyimagenet32", "cifar10", "cifar100"):
        info = registry.DATASETS[name]
        i = 1 if info.derivation else 0
        fi = info.files[i]
        files = list(info.files)
        files[i] = dataclasses.replace(fi, url=f"{server['url']}/official/{Path(fi.path).name}")
        registry.DATASETS[name] = dataclasses.replace(info, files=tuple(files))
    for sub in ("official", "mirror"):
        (server["folder"] / sub).mkdir()
        for src in (toys["dtd"], toys["tiny"], toys["paper"] / "cifar-10-python.tar.gz",
                    toys["paper"] / "cifar-100-python.tar.gz"):
            (server["folder"] / sub / src.name).write_bytes(src.read_bytes())
    return server


# ---------------------------------------------------------------------------------------------- the oracles

def oracle_dtd(data: bytes) -> np.ndarray:
    """Pillow directly: RGB; shorter side to 32, the long side int(32 * long / short); bilinear; the centre 32x32 at
    Python's round((side - 32) / 2)."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    size = (32, int(32 * h / w)) if w <= h else (int(32 * w / h), 32)
    im = im.resize(size, Image.BILINEAR)
    left, top = round((size[0] - 32) / 2), round((size[1] - 32) / 2)
    return np.asarray(im.crop((left, top, left + 32, top + 32)))


def oracle_tiny(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((32, 32), Image.BILINEAR))


def dtd_members(archive: Path) -> dict[str, bytes]:
    """``<category>/<stem>`` -> JPEG bytes of every dtd/images/*/*.jpg of the toy archive."""
    with tarfile.open(archive) as tar:
        return {m.name[len("dtd/images/"):-len(".jpg")]: tar.extractfile(m).read() for m in tar.getmembers()
                if m.isfile() and m.name.startswith("dtd/images/") and m.name.endswith(".jpg")}


def tiny_members(archive: Path) -> dict[str, bytes]:
    """``<wnid>/<stem>`` -> JPEG bytes of every training image of the toy zip."""
    with zipfile.ZipFile(archive) as zf:
        return {f"{n.split('/')[2]}/{n.split('/')[4][:-len('.JPEG')]}": zf.read(n) for n in zf.namelist()
                if n.startswith("tiny-imagenet-200/train/") and n.endswith(".JPEG")}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_dtd_oracle_is_torchvisions_resize_and_centre_crop(toys):
    """The stated equivalence: the transform is torchvision's resize(img, 32, BILINEAR, antialias=True) +
    center_crop(img, 32) on a PIL image, on every toy size (odd offsets, a truncated long side)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    for data in dtd_members(toys["dtd"]).values():
        im = Image.open(io.BytesIO(data)).convert("RGB")
        tv = TF.center_crop(TF.resize(im, 32, InterpolationMode.BILINEAR, antialias=True), 32)
        assert np.array_equal(np.asarray(tv), oracle_dtd(data)), im.size


# ---------------------------------------------------------------------------------------------- derivations

def test_dtd10_derives_from_the_official_url_and_equals_the_pillow_oracle(hooked, toys, tmp_path):
    root = tmp_path / "data"
    ds = load("dtd10", "test", root, download=True)                 # empty root, no mirror, no shared copy
    assert hooked["log"] == [f"/official/{DTD}"]
    first10 = list(toy_archives.DTD_CATEGORIES[:10])
    folder = root / "dtd10-32"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == first10         # not dotted, fibrous
    pngs = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    members = {k: v for k, v in dtd_members(toys["dtd"]).items() if k.split("/")[0] in first10}
    assert pngs == sorted(f"{k}.png" for k in members) and len(pngs) == 20           # extra.png, notes.txt ignored
    want = np.stack([oracle_dtd(members[k[:-len(".png")]]) for k in pngs])
    assert torch.equal(ds.images, torch.from_numpy(want).permute(0, 3, 1, 2))
    assert ds.labels.tolist() == [-1] * 20
    man = json.loads((folder / derive.DERIVED_MANIFEST).read_text())
    assert man["source"]["file"] == DTD and man["source"]["checksum"] == md5(toys["dtd"].read_bytes())
    assert man["count"] == 20 and man["pillow"] == PIL.__version__
    assert man["transform"] == registry.DATASETS["dtd10"].derivation
    assert not [p for p in root.iterdir() if p.name.startswith(".")]                  # no temporary folder left


def test_tinyimagenet32_derives_from_a_mirror_and_equals_the_pillow_oracle(hooked, toys, tmp_path, monkeypatch):
    monkeypatch.setenv(registry.MIRRORS_ENV, f"{hooked['url']}/mirror")
    root = tmp_path / "data"
    ds = load("tinyimagenet32", "train", root)                      # no download: the mirror has the official zip
    assert hooked["log"] == ["/mirror/tinyimagenet32-train.tar.xz", f"/mirror/{TINY}"]
    members = tiny_members(toys["tiny"])
    folder = root / "tinyimagenet32"
    pngs = sorted(p.relative_to(folder / "train").as_posix() for p in (folder / "train").rglob("*"))
    assert [p for p in pngs if "." in p] == sorted(f"{k}.png" for k in members) and len(members) == 9
    want = np.stack([oracle_tiny(members[k[:-len(".png")]]) for k in pngs if k.endswith(".png")])
    assert torch.equal(ds.images, torch.from_numpy(want).permute(0, 3, 1, 2))
    gray = ds.images[0]                                              # n01443537_0: the grayscale JPEG
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    with zipfile.ZipFile(toys["tiny"]) as zf:
        for txt in ("wnids.txt", "words.txt"):
            assert (folder / txt).read_bytes() == zf.read(f"tiny-imagenet-200/{txt}")
    assert sorted(p.name for p in folder.iterdir()) == ["DERIVED.json", "train", "train-uint8.npy", "wnids.txt",
                                                        "words.txt"]
    assert json.loads((folder / "DERIVED.json").read_text())["count"] == 9


def test_two_derivations_of_one_archive_are_byte_identical(hooked, toys, tmp_path):
    for name, archive, sub in (("dtd10", toys["dtd"], "dtd10-32"), ("tinyimagenet32", toys["tiny"], "tinyimagenet32")):
        a = derive.derive_set(name, archive, tmp_path / "a" / sub)
        b = derive.derive_set(name, archive, tmp_path / "b" / sub)
        ta, tb = tree(a), tree(b)
        assert len(ta) > 9 and ta == tb, name


# ---------------------------------------------------------------------------------------------- failures

def test_a_tampered_official_archive_is_a_checksum_error_and_leaves_nothing(hooked, toys, tmp_path, monkeypatch):
    bad = bytearray(toys["dtd"].read_bytes())
    bad[len(bad) // 2] ^= 0xFF
    (hooked["folder"] / "mirror" / DTD).write_bytes(bytes(bad))
    monkeypatch.setenv(registry.MIRRORS_ENV, f"{hooked['url']}/mirror")
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match=rf"mirror .* served .*{DTD} with md5"):
        load("dtd10", "test", root, download=True)
    assert f"/official/{DTD}" not in hooked["log"]                    # a wrong file stops the lookup
    assert files_under(root) == []
    (root / "dtd").mkdir(parents=True)                                # the same file under the root
    (root / "dtd" / DTD).write_bytes(bytes(bad))
    with pytest.raises(ChecksumError, match="corrupt or truncated"):
        load("dtd10", "test", root, download=True)
    assert files_under(root) == ["dtd", f"dtd/{DTD}"]


def test_an_interrupted_derivation_leaves_no_folder_taken_for_the_set(hooked, tmp_path, monkeypatch):
    saved = []
    real = derive._save_png

    def dies_at_the_fifth(img, path):
        if len(saved) == 4:
            raise KeyboardInterrupt("interrupted")
        saved.append(path)
        real(img, path)

    monkeypatch.setattr(derive, "_save_png", dies_at_the_fifth)
    root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        load("dtd10", "test", root, download=True)
    assert len(saved) == 4 and not (root / "dtd10-32").exists()
    assert files_under(root) == ["dtd", f"dtd/{DTD}"]                # the checked archive stays; no half set
    # a derivation killed outright leaves its hidden temporary folder: no reader takes it for the set
    dead = root / ".dtd10-32.derive-killed" / "banded"
    dead.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(dead / "banded_0001.png")
    monkeypatch.setattr(derive, "_save_png", real)
    ds = load("dtd10", "test", root, download=True)
    assert len(ds) == 20 and (root / "dtd10-32" / derive.DERIVED_MANIFEST).is_file()
    assert hooked["log"] == [f"/official/{DTD}"]                      # the archive was fetched once


@pytest.mark.parametrize("name,split,copy,archive", [("dtd10", "test", "dtd10-32.tar.xz", DTD),
                                                     ("tinyimagenet32", "train", "tinyimagenet32-train.tar.xz", TINY)])
def test_with_no_source_the_one_line_message_names_the_copy_and_the_official_archive(hooked, tmp_path, monkeypatch,
                                                                                    name, split, copy, archive):
    monkeypatch.setenv(registry.MIRRORS_ENV, f"{hooked['url']}/empty")
    root = tmp_path / "data"
    with pytest.raises(DataMissingError) as e:
        load(name, split, root)
    msg = str(e.value)
    assert "\n" not in msg and copy in msg and archive in msg and f"/empty/{copy}" in msg and f"/empty/{archive}" in msg
    assert f"{hooked['url']}/official/{archive}" in msg and "download=True" in msg
    official = registry.DATASETS[name].files[1]
    assert f"our derived copy {copy} (" in msg and f"the official archive {archive} ({official.checksum}" in msg
    for f in (hooked["folder"] / "official").iterdir():
        f.unlink()                                                    # the official URL: 404
    with pytest.raises(DataMissingError) as e:
        load(name, split, root, download=True)
    msg = str(e.value)
    assert "\n" not in msg and f"/official/{archive} (HTTP 404" in msg and copy in msg
    assert files_under(root) == []


# ---------------------------------------------------------------------------------------------- source order

def _copy_archive(folder: str, n: int = 3) -> bytes:
    """A toy derived copy (the layout of ../shared/data's): ``<folder>/<cls>/<i>.png`` in a tar.xz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for i in range(n):
            png = io.BytesIO()
            Image.fromarray(np.full((32, 32, 3), 50 * i, np.uint8)).save(png, format="PNG")
            ti = tarfile.TarInfo(f"{folder}/c{i}/{i}.png")
            ti.size = len(png.getvalue())
            tar.addfile(ti, io.BytesIO(png.getvalue()))
    return buf.getvalue()


def test_our_derived_copy_comes_before_the_official_archive(hooked, tmp_path, monkeypatch):
    data = _copy_archive("dtd10-32")
    info = registry.DATASETS["dtd10"]
    sha = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.DATASETS["dtd10"] = dataclasses.replace(
        info, files=(dataclasses.replace(info.files[0], checksum=sha),) + info.files[1:])
    monkeypatch.setenv(registry.MIRRORS_ENV, f"{hooked['url']}/mirror")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "dtd10-32.tar.xz").write_bytes(data)
    monkeypatch.setattr(fetching, "SHARED_DATA", shared)
    ds = load("dtd10", "test", tmp_path / "a", download=True)         # the offline mirror: nothing fetched
    assert hooked["log"] == [] and len(ds) == 3 and ds.images[:, :, 0, 0].tolist() == [[0] * 3, [50] * 3, [100] * 3]
    monkeypatch.setattr(fetching, "SHARED_DATA", tmp_path / "no-shared")
    (hooked["folder"] / "mirror" / "dtd10-32.tar.xz").write_bytes(data)
    assert len(load("dtd10", "test", tmp_path / "b", download=True)) == 3
    assert hooked["log"] == ["/mirror/dtd10-32.tar.xz"]               # the copy at the mirror, not the archive
    (shared / "dtd10-32.tar.xz").write_bytes(lzma.compress(b"not our copy"))
    monkeypatch.setattr(fetching, "SHARED_DATA", shared)
    with pytest.raises(ChecksumError, match="sha256"):                # a wrong copy is not passed over
        load("dtd10", "test", tmp_path / "c", download=True)
    assert files_under(tmp_path / "c") == []


def test_describe_shows_the_official_source_its_checksum_and_the_transform():
    dtd, tiny = describe("dtd10", full=True), describe("tinyimagenet32", full=True)
    assert ("official archive: <root>/dtd/dtd-r1.0.1.tar.gz  from https://www.robots.ox.ac.uk/~vgg/data/dtd/download/"
            "dtd-r1.0.1.tar.gz  md5:fff73e5086ae6bdbea199a49dfb8a4c1  [torchvision") in dtd
    assert "floor(32 * long / short)" in dtd and "round((w - 32) / 2)" in dtd and "first 10 categories" in dtd
    assert ("official archive: <root>/tiny-imagenet-200.zip  from http://cs231n.stanford.edu/tiny-imagenet-200.zip  "
            "md5:90528d7ca1a48142e341f4ef8d21d0de  [URL: the official CS231n download; md5: Avalanche") in tiny
    assert "Image.resize((32, 32), Image.BILINEAR)" in tiny and "derivation" in tiny
    for text in (dtd, tiny):
        assert "NOT the official files" not in text and "no public URL;" not in text
    assert "derived from the official dtd-r1.0.1.tar.gz" in describe("dtd10")


# ---------------------------------------------------------------------------------------------- the profile

def test_the_cifar10_cpu_profile_asks_for_downloads_and_cifar_comes_from_its_official_url(hooked, tmp_path,
                                                                                          monkeypatch):
    params = config.load_params()
    assert params["profiles"]["cifar10-cpu"]["benchmark"]["download"] is True
    seen = []
    with monkeypatch.context() as m:
        m.setattr(benchmark, "load", lambda name, split, root, **kw: seen.append((name, kw["download"])))
        try:
            benchmark.load_benchmark(params, "cifar10-cpu")
        except Exception:
            pass
    assert {"cifar10", "cifar100", "dtd10", "tinyimagenet32"} <= {n for n, _ in seen}
    assert all(d is True for _, d in seen)
    root = tmp_path / "data"
    c10, c100 = load("cifar10", "test", root, download=True), load("cifar100", "test", root, download=True)
    assert hooked["log"] == ["/official/cifar-10-python.tar.gz", "/official/cifar-100-python.tar.gz"]
    assert len(c10) == len(c100) == toy_archives.N_TEST


def test_a_queued_dvc_experiment_reads_the_checkouts_data():
    """``dvc exp run --queue`` runs each experiment in <checkout>/.dvc/tmp/exps/<tmp>/, a copy without data/: the
    data root and ../shared/data must stay the checkout's (a real-data sweep failed there with DataMissingError)."""
    from pathlib import Path

    from ood import config, pipeline

    assert config.outside_dvc_temp(Path("/home/u/repo/.dvc/tmp/exps/tmpab12/")) == Path("/home/u/repo")
    assert config.outside_dvc_temp(Path("/home/u/repo/.dvc/tmp/exps/tmpab12/ood")) == Path("/home/u/repo")
    assert config.outside_dvc_temp(Path("/home/u/repo")) == Path("/home/u/repo")
    assert config.outside_dvc_temp(Path("/home/u/.dvc/tmp/other")) == Path("/home/u/.dvc/tmp/other")
    p = pipeline.paths("cifar10-cpu", root=Path("/home/u/repo/.dvc/tmp/exps/tmpab12"))
    assert p["data_root"] == Path("/home/u/repo/data")
    assert p["results"] == Path("/home/u/repo/.dvc/tmp/exps/tmpab12/results/cifar10-cpu")   # outputs stay its own


def test_a_second_process_waits_while_a_data_root_is_being_prepared(tmp_path):
    """The seeds of a stage load their sets in parallel processes; in a queued experiment the data stage does not
    run first, and two seeds extracting TinyImageNet-32 into one root at once failed (one listed files the other
    was still writing). ``load`` holds the root's lock: a second process waits until the first lets go."""
    import subprocess
    import sys
    import time

    from ood.data import fetching

    code = ("import sys; from ood.data import load; print('ready', flush=True); "
            "load('synthetic', 'test', sys.argv[1], n=8); print('done', flush=True)")
    with fetching.data_lock(tmp_path):
        with fetching.data_lock(tmp_path):   # re-entrant within a process
            pass
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(1.5)
            assert proc.poll() is None, "load() did not wait for the lock"
        except BaseException:
            proc.kill()
            raise
    assert proc.stdout.readline().strip() == "done" and proc.wait(timeout=60) == 0
