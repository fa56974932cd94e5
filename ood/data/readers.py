"""The 32x32 sets by name: ``load(name, split)`` and the readers of each file format (synthetic, CIFAR, SVHN, 300K).

* ``load(name, split)`` -> ``ArrayDataset``: a CIFAR-sized set held in memory as a uint8 tensor
  ``(N, 3, H, W)`` (images) and an int64 tensor ``(N,)`` (labels, ``-1`` for OOD / auxiliary data).
  CIFAR-10/100 are read from their python pickles after our checksum check (the arrays torchvision's classes give),
  SVHN from its ``.mat``; image-folder sets go through ``ood.data.folders``. A missing file is looked for at the
  mirrors before its official URL (``download=True``).
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
    data_lock,
    data_root,
    download_file,
    files_under,
    from_mirrors,
    missing_error,
    require,
    verify,
)
from ood.data.folders import load_image_folder
from ood.data.registry import SYNTHETIC_SIZES, DatasetInfo, FileInfo, check_split, dataset_info


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
    with data_lock(root):   # two processes (the seeds of a stage) never prepare one root's files at once
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

def _cifar_files(info: DatasetInfo, root: Path, needed: list, download: bool, extra: str = "") -> None:
    """Make the CIFAR files ``needed`` be under ``root``: the offline copies in ``SHARED_DATA``, else the archive
    under the root or at the mirrors (``require``), else, with ``download``, its official URL (``download_file``,
    checksum-checked), extracted after its checksum; otherwise the one-line DataMissingError of ``require``."""
    try:
        require(info, root, needed, extra=extra)
    except DataMissingError:
        if not download:
            raise
        download_file(info.name, info.files[0], root, mirrors=[])   # the mirrors were tried by require
        require(info, root, needed, extra=extra)


def _read_cifar(info: DatasetInfo, root: Path, split: str, download: bool, batches: list[str], meta: str,
                label_key: str, names_key: str) -> ArrayDataset:
    """A CIFAR split from the python pickles ``batches`` (+ ``meta``), read after each file's checksum passed, as
    torchvision.datasets.CIFAR10/100 read them (``data`` rows reshaped to (N, 3, 32, 32), labels ``label_key``,
    class names ``meta[names_key]``): the same arrays, without torchvision's own md5 check."""
    prefix = info.files[1].path.split("/")[0] + "/"
    files = {Path(f.path).name: f for f in files_under(info, prefix)}
    needed = [files[b] for b in batches] + [files[meta]]
    _cifar_files(info, root, needed, download,
                 extra=f" (the {split} split needs {', '.join(prefix + f for f in [*batches, meta])})")
    for f in needed:
        verify(root / f.path, f)
    xs, ys = [], []
    for b in batches:
        with open(root / files[b].path, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys += list(entry[label_key])
    with open(root / files[meta].path, "rb") as fh:
        classes = tuple(pickle.load(fh, encoding="latin1")[names_key])
    x = np.concatenate(xs) if len(xs) > 1 else xs[0]
    return ArrayDataset(info.name, torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(ys, dtype=torch.int64),
                        classes)


def _load_cifar10(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return _read_cifar(info, root, split, download, batches, "batches.meta", "labels", "label_names")


def _load_cifar100(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    return _read_cifar(info, root, split, download, [split], "meta", "fine_labels", "fine_label_names")


# --- SVHN, 300K random images ----------------------------------------------------------------------------------

def _one_file(name: str, info: DatasetInfo, root: Path, download: bool) -> tuple[Path, FileInfo]:
    """The path of a one-file set's file (``info.files[0]``) under ``root`` and its entry, checksum-checked
    (``verify``): the file there, else from the mirrors, else with ``download`` from its official URL
    (``download_file``); neither: the one-line DataMissingError (``missing_error``)."""
    fi = info.files[0]
    path = root / fi.path
    if not path.is_file() and from_mirrors(name, fi, root, download) is None:
        if not download:
            raise missing_error(name, path, fi, root)
        download_file(name, fi, root)
    verify(path, fi)
    return path, fi


def _load_svhn(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    """SVHN's ``test_32x32.mat`` (MATLAB v5: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1), labels 1-10 with 10 for the
    digit 0), read with scipy.io.loadmat after its checksum passed, as torchvision.datasets.SVHN reads it (the
    images to (N, 3, 32, 32)); the labels are dropped (an OOD set). Absent: the mirrors, then with ``download`` its
    official URL (``_one_file``)."""
    import scipy.io

    path, fi = _one_file("svhn", info, root, download)
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
    path, fi = _one_file("300k-random", info, root, download)
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
