"""The 32x32 sets by name: ``load(name, split)`` and the readers of each file format (synthetic, CIFAR, SVHN, 300K).

* ``load(name, split)`` -> ``ArrayDataset``: a CIFAR-sized set held in memory as a uint8 tensor
  ``(N, 3, H, W)`` (images) and an int64 tensor ``(N,)`` (labels, ``-1`` for OOD / auxiliary data).
  Real datasets go through torchvision's own classes where torchvision has them (CIFAR-10/100, SVHN, DTD
  download); image-folder sets go through ``ood.data.folders``.
"""
from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from ood.data.arrays import ArrayDataset
from ood.data.fetching import (
    ChecksumError,
    DataMissingError,
    atomic_save,
    data_root,
    download_file,
    files_under,
    first_corrupt,
    from_mirrors,
    missing_error,
    require,
    verify,
)
from ood.data.folders import load_image_folder
from ood.data.registry import SYNTHETIC_SIZES, DatasetInfo, check_split, dataset_info


def load(name: str, split: str = "test", root=None, *, seed: int = 0, n: int | None = None, image_size: int = 32,
         download: bool = False) -> ArrayDataset:
    """Load a 32x32 registry set (``DATASETS``) as an in-memory ``ArrayDataset`` (uint8 NCHW, int64 labels).

    ``root``: the data root (default ``DATA_ROOT``). ``n``: for synthetic sets the number generated (default
    ``SYNTHETIC_SIZES``), for real sets a deterministic random subset of that size (``ArrayDataset.subset(n,
    seed)``; default: the whole set). ``seed``: the synthetic generator's seed / the subset's seed.
    ``image_size``: output size of the image-folder sets (LSUN, iSUN, Textures, Places365, TinyImageNet-32);
    array sets are stored at 32 and accept only 32. ``download``: fetch missing files with the original download
    code (needs the network); otherwise a missing file raises ``DataMissingError`` at once.
    """
    info = dataset_info(name)
    if info.resolution != "32":
        raise ValueError(f"dataset {name!r} is a full-resolution image folder: use load_folder({name!r}, root, "
                         "transform)")
    split = check_split(info, split)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be an integer >= 1")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"n={n!r} must be None or an integer >= 1")
    root = data_root(root)
    if name.startswith("synthetic"):
        _need_32(name, image_size)
        set_name = split if name == "synthetic" else name[len("synthetic-"):]
        return _load_synthetic(name, set_name, root, seed, n)
    if info.folders:
        ds = load_image_folder(info, root, split, info.decode_size or image_size, download, n=n, seed=seed)
    else:
        _need_32(name, image_size)
        ds = _ARRAY_LOADERS[name](info, root, split, download)
    return ds.subset(n, seed) if n is not None else ds


def _need_32(name: str, image_size: int) -> None:
    if image_size != 32:
        raise ValueError(f"image_size={image_size} is not available for {name!r}: it is stored at 32x32 (allowed: 32)")


def _from_hwc(name: str, x: np.ndarray, y, classes=None) -> ArrayDataset:
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    return ArrayDataset(name, images, torch.as_tensor(np.asarray(y), dtype=torch.int64), classes)


# --- synthetic -----------------------------------------------------------------------------------------------

def _generator_fingerprint(module) -> str:
    """sha256 of ood/synthetic.py, stored in each cache file, so an edited generator regenerates the caches."""
    f = getattr(module, "__file__", None)
    try:
        return hashlib.sha256(Path(f).read_bytes()).hexdigest()[:16] if f else ""
    except OSError:
        return ""


def _load_synthetic(name: str, set_name: str, root: Path, seed: int, n: int | None) -> ArrayDataset:
    from ood import synthetic

    n = SYNTHETIC_SIZES[set_name] if n is None else n
    path = root / "synthetic" / f"{set_name}-s{seed}-n{n}.npz"
    fp = _generator_fingerprint(synthetic)
    x = y = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                x, y, cached_fp = z["x"], z["y"], str(z["generator"])
            if x.shape != (n, 32, 32, 3) or x.dtype != np.uint8 or y.shape != (n,) or cached_fp != fp:
                x = y = None
        except Exception as e:  # a truncated / foreign file: regenerate it
            warnings.warn(f"{path} is unreadable ({type(e).__name__}: {e}); regenerating it", stacklevel=1)
            x = y = None
    if x is None:
        x, y = synthetic.generate(set_name, n, seed=seed)
        x, y = np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)
        if x.shape != (n, 32, 32, 3) or y.shape != (n,):
            raise ValueError(f"ood.synthetic.generate({set_name!r}, {n}) returned images {x.shape} and labels "
                             f"{y.shape}; expected ({n}, 32, 32, 3) and ({n},)")
        atomic_save(path, lambda f: np.savez(f, x=x, y=y, generator=np.array(fp)))
    classes = tuple(synthetic.CLASSES) if name == "synthetic" else None
    return _from_hwc(name, x, y, classes)


# --- CIFAR ---------------------------------------------------------------------------------------------------

def _load_cifar10(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    import torchvision

    needed = files_under(info, "cifar-10-batches-py/")
    if not download:
        require(info, root, needed)
    try:
        tv = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        require(info, root, needed)
        first_corrupt(root, needed)
        raise
    except Exception as e:  # download failure
        raise DataMissingError(f"cifar10: download of {info.files[0].url} failed ({type(e).__name__}: {e}); download "
                               f"it by hand ({info.files[0].checksum}) and extract it into {root}.") from None
    return _from_hwc("cifar10", tv.data, tv.targets, tuple(tv.classes))


def _load_cifar100(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    import torchvision

    files = {Path(f.path).name: f for f in files_under(info, "cifar-100-python/")}
    if split == "train":
        needed = list(files.values())
        if not download:
            require(info, root, needed)
        try:
            tv = torchvision.datasets.CIFAR100(str(root), train=True, download=download)
        except RuntimeError:
            require(info, root, needed)
            first_corrupt(root, needed)
            raise
        except Exception as e:
            raise DataMissingError(f"cifar100: download of {info.files[0].url} failed ({type(e).__name__}: {e}); "
                                   f"download it by hand ({info.files[0].checksum}) and extract it into "
                                   f"{root}.") from None
        return _from_hwc("cifar100", tv.data, tv.targets, tuple(tv.classes))
    # test split: only test + meta are needed (torchvision's class would insist on the training file)
    needed = [files["test"], files["meta"]]
    if download and any(not (root / f.path).is_file() for f in needed):
        try:
            torchvision.datasets.CIFAR100(str(root), train=False, download=True)
        except Exception as e:
            raise DataMissingError(f"cifar100: download of {info.files[0].url} failed ({type(e).__name__}: {e}); "
                                   f"download it by hand ({info.files[0].checksum}) and extract it into "
                                   f"{root}.") from None
    require(info, root, needed, extra=" (the test split needs only cifar-100-python/test and meta)")
    for f in needed:
        verify(root / f.path, f)
    with open(root / files["test"].path, "rb") as fh:
        entry = pickle.load(fh, encoding="latin1")
    with open(root / files["meta"].path, "rb") as fh:
        classes = tuple(pickle.load(fh, encoding="latin1")["fine_label_names"])
    x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return ArrayDataset("cifar100", torch.from_numpy(x.copy()),
                        torch.as_tensor(entry["fine_labels"], dtype=torch.int64), classes)


# --- SVHN, 300K random images ----------------------------------------------------------------------------------

def _load_svhn(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    """SVHN's ``test_32x32.mat`` (MATLAB v5: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1), labels 1-10 with 10 for the
    digit 0), read with scipy.io.loadmat after its checksum passed, as torchvision.datasets.SVHN reads it (the
    images to (N, 3, 32, 32)); the labels are dropped (an OOD set). Absent: the mirrors, then with ``download`` its
    official URL (``download_file``)."""
    import scipy.io

    fi = info.files[0]
    path = root / fi.path
    if not path.is_file() and from_mirrors("svhn", fi, root, download) is None:
        if not download:
            raise missing_error("svhn", path, fi, root)
        download_file("svhn", fi, root)
    verify(path, fi)
    try:
        x = scipy.io.loadmat(str(path), variable_names=["X"])["X"]
    except Exception as e:
        raise ChecksumError(f"{path} is not a readable SVHN .mat ({type(e).__name__}: {e}); it was not used. Download "
                            f"it again from {fi.url}.") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise ChecksumError(f"{path} holds X {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N); it was not used. "
                            f"Download it again from {fi.url}.")
    images = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))))   # (N, 3, 32, 32) uint8
    return ArrayDataset("svhn", images, torch.full((len(images),), -1, dtype=torch.int64))


def _load_300k(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    fi = info.files[0]
    path = root / fi.path
    if not path.is_file() and from_mirrors("300k-random", fi, root, download) is None:
        if not download:
            raise missing_error("300k-random", path, fi, root)
        download_file("300k-random", fi, root)
    verify(path, fi)
    try:
        arr = np.load(path, mmap_mode="c")  # copy-on-write map: a writable view without reading the file
    except Exception as e:
        raise ChecksumError(f"{path} is not a readable .npy ({type(e).__name__}: {e}); it was not used. Download it "
                            f"again from {fi.url}.") from None
    if arr.ndim != 4 or arr.shape[1:] != (32, 32, 3) or arr.dtype != np.uint8:
        raise ChecksumError(f"{path} holds {arr.dtype} {arr.shape}, expected uint8 (N, 32, 32, 3); it was not used. "
                            f"Download it again from {fi.url}.")
    images = torch.from_numpy(arr).permute(0, 3, 1, 2)                 # a (N, 3, 32, 32) view of the map
    return ArrayDataset("300k-random", images, torch.full((arr.shape[0],), -1, dtype=torch.int64))


_ARRAY_LOADERS = {"cifar10": _load_cifar10, "cifar100": _load_cifar100, "svhn": _load_svhn, "300k-random": _load_300k}
