"""Datasets by name, checksummed files, and the device-side data path (uint8 arrays, batched crops and flips).

Every set the notebooks use is a registry entry (``DATASETS``, printed by ``describe(name)``): its role
(``id``/``ood``/``aux``), where its files come from (original distribution URL), their checksums, where they
go under the data root, how images are preprocessed, and what to cite.

* ``load(name, split)`` -> ``ArrayDataset``: a CIFAR-sized set held in memory as a uint8 tensor
  ``(N, 3, H, W)`` (images) and an int64 tensor ``(N,)`` (labels, ``-1`` for OOD / auxiliary data).
  Real datasets go through torchvision's own classes where torchvision has them (CIFAR-10/100, SVHN, DTD
  download); image-folder sets (LSUN-C, LSUN-R, iSUN, Textures, Places365, TinyImageNet-32) are decoded
  once, resized to 32x32 the way the papers' code does it, and cached as a ``.npy`` beside the images.
* ``load_folder(name)`` -> ``torchvision.datasets.ImageFolder`` for the full-resolution ImageNet profile
  (ImageNet-1k, and the iNaturalist / SUN / Places / Textures OOD sets of Huang & Li 2021).
* ``Loader`` iterates over an ``ArrayDataset`` in batches, shuffled each epoch, with ``augment_batch``
  (random crop with zero padding 4 + horizontal flip, as torchvision's ``RandomCrop(32, padding=4)`` +
  ``RandomHorizontalFlip()``) applied to the whole batch on its device: no DataLoader workers, no PIL
  (the airbench recipe).

Missing data fail at once with one ``DataMissingError`` line (which file, from where, where to put it, its
checksum); a corrupt or truncated file fails its checksum with a ``ChecksumError`` and is not used. With
``download=True`` the real download code runs (torchvision's, with its md5 check). Checksums are those
published in torchvision's source or in the OOD codebases named in each entry; where none could be
confirmed the entry says ``unverified`` and only existence and readability are checked.

The data root is ``$OOD_DATA_ROOT`` or ``<repo>/data`` (git-ignored). ``SHARED_DATA`` is the folder
``<repo>/../shared/data`` that may sit beside the checkout (official CIFAR files and a TinyImageNet-32 stand-in).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ood.distributed import shard_slice

__all__ = [
    "DATA_ROOT", "SHARED_DATA", "SYNTHETIC_SIZES", "ArrayDataset", "FolderDataset", "folder_dataset", "locate_folder", "Loader",
    "augment_batch", "load",
    "load_folder", "describe", "DATASETS", "DatasetInfo", "FileInfo", "DataMissingError", "ChecksumError",
    "file_checksum",
]

def _checkout() -> Path:
    """The checkout holding this package (``ood.config.repo_root`` from the package's folder, so not the test
    suite's pipeline copy that ``OOD_ROOT`` names); the working directory for an install without a checkout."""
    from ood.config import repo_root

    try:
        return repo_root(Path(__file__).resolve().parent)
    except FileNotFoundError:
        return Path.cwd()


DATA_ROOT: Path = Path(os.environ.get("OOD_DATA_ROOT") or _checkout() / "data")
SHARED_DATA: Path = _checkout().parent / "shared" / "data"

#: Default sizes of the synthetic sets (``load(..., n=...)`` overrides) [ours: a CPU-sized CIFAR-like benchmark].
SYNTHETIC_SIZES = {"train": 10000, "test": 2000, "backgrounds": 2000, "novel-objects": 2000, "textures": 2000,
                   "noise": 2000, "aux": 10000}

#: Places365 OOD set: 10,000 test images, the size of the KNN/energy codebases' subset [code: knn-ood README].
PLACES365_N = 10000
#: Seed of our documented sample of the Places365 test images when their list file is absent [ours].
PLACES365_SAMPLE_SEED = 0

_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


class DataMissingError(FileNotFoundError):
    """A dataset file is not under the data root; the one-line message says which, from where, where, checksum."""


class ChecksumError(ValueError):
    """A file is corrupt or truncated (checksum mismatch, undecodable); it was not used. The message says what to do."""


# ----------------------------------------------------------------------------------------------------------
# ArrayDataset, Loader, augmentation
# ----------------------------------------------------------------------------------------------------------

def _subset_indices(name: str, N: int, n: int, seed: int) -> torch.Tensor | None:
    """Sorted indices of a uniformly random ``n`` of ``N`` items (None: all of them), the subset rule of both datasets."""
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= N:
        raise ValueError(f"subset size n={n!r} must be an integer in 1..{N} (the size of {name!r})")
    if n == N:
        return None
    return torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:n].sort().values


@dataclass
class ArrayDataset:
    """A set of small images held as one uint8 tensor ``(N, 3, H, W)`` and int64 labels ``(N,)`` (-1: unlabelled)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ArrayDataset {self.name!r}: images must be uint8 (N, 3, H, W), got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"ArrayDataset {self.name!r}: labels must be int64 ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device) -> "ArrayDataset":
        """The same set with images and labels on ``device`` (no copy if already there)."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` images, uint8 ``(n, 3, H, W)`` (sample grids)."""
        return self.images[:n]

    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the images and labels: changes iff the data change."""
        h = hashlib.sha256(self.images.cpu().numpy().tobytes())
        h.update(self.labels.cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def subset(self, n: int, seed: int = 0) -> "ArrayDataset":
        """A uniformly random subset of ``n`` images, kept in their original order.

        The indices are ``sorted(torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:n])``,
        so a subset is reproducible from ``(n, seed)`` and a smaller ``n`` with the same seed is not nested [ours].
        """
        idx = _subset_indices(self.name, len(self), n, seed)
        if idx is None:
            return self
        idx = idx.to(self.images.device)
        return replace(self, images=self.images[idx], labels=self.labels[idx])


def _crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop ``x`` (B, C, H, W), zero-padded by ``pad``, at per-sample offsets (top, left); mirror where ``flip``.

    Output pixel (b, c, i, j) = padded[b, c, top_b + i, left_b + j'] with j' = W-1-j if flip_b else j: the crop
    of torchvision's ``F.crop(F.pad(img, pad), top, left, H, W)`` followed by ``F.hflip`` where flipped.
    One advanced-indexing gather over the batch, on x's device.
    """
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    ar_h = torch.arange(H, device=x.device)
    ar_w = torch.arange(W, device=x.device)
    rows = top[:, None] + ar_h                                                   # (B, H)
    cols = left[:, None] + torch.where(flip[:, None], (W - 1) - ar_w, ar_w)     # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return xp[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4,
                  flip: bool = True, *, draw: int | None = None, start: int = 0) -> torch.Tensor:
    """Random crop with zero padding + random horizontal flip of a uint8 batch ``(B, C, H, W)``, on x's device.

    Per sample, independently: ``top, left ~ Uniform{0, ..., 2*pad}``, ``flip ~ Bernoulli(0.5)`` (if ``flip``);
    the output is the H x W window at (top, left) of the image zero-padded by ``pad`` on every side, mirrored
    left-right when flipped. This is the distribution of torchvision ``RandomCrop(H, padding=pad)`` followed by
    ``RandomHorizontalFlip()``, the CIFAR augmentation of the papers and of the Energy-OE/OE code [paper, code];
    ``pad=4`` [paper]. ``pad=0, flip=False`` is the identity.

    The random numbers come from ``generator`` (drawn on its device, e.g. a CPU generator for CUDA data, then
    moved) or from torch's default generator of x's device when None. ``draw``/``start``: draw the numbers of a
    batch of ``draw`` images and use those of rows ``start .. start + B`` (a process's shard of a global batch,
    ``ood.distributed``: its images are augmented as in the whole batch).
    """
    if x.ndim != 4:
        raise ValueError(f"augment_batch expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad={pad!r} must be an integer >= 0")
    B = x.shape[0]
    n = B if draw is None else draw
    if not 0 <= start <= n - B:
        raise ValueError(f"rows {start}..{start + B} are not in a batch of {n}")
    rows = slice(start, start + B)
    gdev = generator.device if generator is not None else x.device
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev)[rows].to(x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev)[rows].to(x.device)
    if flip:
        fl = (torch.rand(n, generator=generator, device=gdev)[rows] < 0.5).to(x.device)
    else:
        fl = torch.zeros(B, dtype=torch.bool, device=x.device)
    return _crop_flip(x, top, left, fl, pad)


class Loader:
    """Batches ``(x, y)`` of an ``ArrayDataset``: x float32 in [0, 1] ``(B, 3, H, W)`` and y int64, on ``device``.

    Reusable: each ``iter()`` is one epoch, re-shuffled (``shuffle=True``) from ``generator`` (or torch's
    default generator when None); set ``loader.generator`` between epochs to control it. Indexing happens
    where the data live (put the set on the GPU with ``ds.to(device)`` for the fast path); batches are moved
    to ``device`` as uint8, then augmented there (``augment_batch``) and converted to float. Without
    ``drop_last`` every index appears exactly once per epoch.

    ``world`` (an ``ood.distributed.World``): ``batch_size`` is the global batch and each batch holds this process's
    shard of it (``ood.distributed.shard_slice``), augmented as in the global batch.
    """

    def __init__(self, ds: ArrayDataset, batch_size: int, *, device=None, shuffle: bool = False, augment: bool = False,
                 drop_last: bool = False, generator: torch.Generator | None = None, pad: int = 4, world=None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
        self.ds = ds
        self.batch_size = batch_size
        default = ds.images.device if isinstance(ds, ArrayDataset) else torch.device("cpu")
        self.device = torch.device(device) if device is not None else default
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.generator = generator
        self.pad = pad
        self.world = world
        if world is not None and world.distributed:
            shard_slice(batch_size, world, "batch size")   # checks that it splits evenly

    def shard(self, total: int) -> slice:
        """The rows of a global batch of ``total`` this process keeps (all of them without ``world``)."""
        if self.world is None or not self.world.distributed:
            return slice(0, total)
        return shard_slice(total, self.world)

    def __len__(self) -> int:
        n, b = len(self.ds), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.ds, FolderDataset):
            yield from self.ds.batches(self)
            return
        n, b = len(self.ds), self.batch_size
        order = None
        if self.shuffle:
            g = self.generator
            order = torch.randperm(n, generator=g, device=g.device if g is not None else "cpu")
            order = order.to(self.ds.images.device)
        sharded = self.world is not None and self.world.distributed
        for i in range(len(self)):
            lo, hi = i * b, min((i + 1) * b, n)
            idx = slice(lo, hi) if order is None else order[lo:hi]
            rows = self.shard(hi - lo) if sharded else None   # this process's rows of the global batch
            if rows is not None:
                idx = slice(lo + rows.start, lo + rows.stop) if order is None else idx[rows]
            x, y = self.ds.images[idx], self.ds.labels[idx]
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.augment:
                x = (augment_batch(x, self.generator, pad=self.pad) if rows is None else
                     augment_batch(x, self.generator, pad=self.pad, draw=hi - lo, start=rows.start))
            yield x.float().div_(255), y


class _FolderItems(torch.utils.data.Dataset):
    """Decoded, transformed items of a FolderDataset for a DataLoader: ``(uint8 (3, S, S), label)``.

    ``seed`` None: the evaluation transform. Otherwise the training transform, its random draws from a generator
    seeded with ``(seed, index)``, so an epoch's augmentations do not depend on the number of workers.
    """

    def __init__(self, ds: "FolderDataset", seed: int | None):
        import torchvision.transforms as T

        self.files, self.labels, self.seed = ds.files, ds.labels, seed
        if seed is None:   # evaluation: the standard ImageNet protocol, Resize(256) + CenterCrop(224) [code: torchvision]
            self.tf = T.Compose([T.Resize(ds.resize), T.CenterCrop(ds.image_size), T.PILToTensor()])
        else:              # training: RandomResizedCrop(224) + RandomHorizontalFlip() [code: torchvision, Greg-OOD]
            self.tf = T.Compose([T.RandomResizedCrop(ds.image_size), T.RandomHorizontalFlip(), T.PILToTensor()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            img = im.convert("RGB")
        if self.seed is None:
            x = self.tf(img)
        else:
            with torch.random.fork_rng(devices=[]):   # torchvision draws from the global generator
                torch.manual_seed((self.seed * 1_000_003 + i) % (2 ** 63))
                x = self.tf(img)
        return x, self.labels[i]


@dataclass
class FolderDataset:
    """A set of full-resolution image files read batch by batch: the streaming counterpart of ``ArrayDataset``.

    For sets that do not fit in memory (the ImageNet profile: 1.28M images, or 130,000 auxiliary ones). ``Loader``
    takes either kind; for a FolderDataset it decodes in a ``torch.utils.data.DataLoader`` with ``workers``
    processes and moves uint8 batches to the device, where they become float in [0, 1] like every other batch.
    Training batches (``augment=True``) go through ``RandomResizedCrop(image_size)`` + ``RandomHorizontalFlip()``,
    evaluation batches through ``Resize(resize)`` + ``CenterCrop(image_size)``, torchvision's ImageNet protocol
    (224 from 256) [code: torchvision reference scripts, used by the Greg-OOD and MOS ImageNet code]. The shuffled
    order and every augmentation draw come from the loader's generator, so an epoch is reproducible.
    """

    name: str
    files: tuple[str, ...]
    labels: torch.Tensor                      # int64 (N,), -1: unlabelled
    classes: tuple[str, ...] | None = None
    image_size: int = 224
    resize: int = 256
    workers: int = 4
    _streams: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.files = tuple(str(f) for f in self.files)
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.files),):
            raise ValueError(f"FolderDataset {self.name!r}: labels must be int64 ({len(self.files)},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if not self.files:
            raise ValueError(f"FolderDataset {self.name!r}: no image files")
        for key in ("image_size", "resize"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"FolderDataset {self.name!r}: {key}={v!r} must be an integer >= 1")
        if self.resize < self.image_size:
            raise ValueError(f"FolderDataset {self.name!r}: resize={self.resize} must be >= image_size={self.image_size}")

    def __len__(self) -> int:
        return len(self.files)

    def to(self, device) -> "FolderDataset":
        """The same set: files stay on disk and batches go to the loader's device."""
        return self

    def subset(self, n: int, seed: int = 0) -> "FolderDataset":
        """A uniformly random subset of ``n`` files, by the same rule as ``ArrayDataset.subset``."""
        idx = _subset_indices(self.name, len(self), n, seed)
        if idx is None:
            return self
        return replace(self, files=tuple(self.files[i] for i in idx.tolist()), labels=self.labels[idx], _streams={})

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` images through the evaluation transform, uint8 ``(n, 3, S, S)`` (sample grids)."""
        items = _FolderItems(self, None)
        return torch.stack([items[i][0] for i in range(min(n, len(self)))])

    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the file names, sizes and labels (the files are not read)."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f}\0{os.path.getsize(f)}\n".encode())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def batches(self, loader: "Loader") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of ``loader`` (its batch size, shuffle, drop_last, augment, generator and device)."""
        n, b = len(self), loader.batch_size
        g = loader.generator
        order = torch.randperm(n, generator=g) if loader.shuffle else torch.arange(n)
        seed = int(torch.randint(2 ** 62, (1,), generator=g)) if loader.augment else None
        order = order.tolist()
        groups = [order[i * b:(i + 1) * b] for i in range(len(loader))]
        groups = [grp[loader.shard(len(grp))] for grp in groups]   # this process's shard (augmented per image)
        dl = torch.utils.data.DataLoader(_FolderItems(self, seed), batch_sampler=groups, num_workers=self.workers,
                                         pin_memory=loader.device.type == "cuda")
        for x, y in dl:
            yield (x.to(loader.device, non_blocking=True).float().div_(255),
                   y.to(loader.device, non_blocking=True))

    def draw(self, n: int, generator: torch.Generator | None, augment: bool, device, world=None) -> torch.Tensor:
        """``n`` random images as float in [0, 1] on ``device``: the outlier batches of training (with ``world``:
        this process's shard of ``n``).

        Draws come from one endless shuffled stream per ``(n, augment, device)``, seeded from ``generator`` at its
        first use (an ArrayDataset draws with replacement each step; a stream reads each file once per pass).
        """
        key = (n, augment, str(device))
        stream = self._streams.get(key)
        if stream is None:
            seed = int(torch.randint(2 ** 62, (1,), generator=generator))
            loader = Loader(self, n, device=device, shuffle=True, augment=augment, drop_last=True,
                            generator=torch.Generator().manual_seed(seed), world=world)
            if len(loader) == 0:
                raise ValueError(f"{self.name!r}: cannot draw {n} images from a set of {len(self)}")
            stream = self._streams[key] = _endless(loader)
        return next(stream)[0]


def take_rows(ds: "ArrayDataset | FolderDataset", rows: slice) -> "ArrayDataset | FolderDataset":
    """The set restricted to ``rows`` (a slice), in order: a process's share of an evaluation set."""
    if isinstance(ds, FolderDataset):
        return FolderDataset(ds.name, ds.files[rows], ds.labels[rows], ds.classes, ds.image_size, ds.resize, ds.workers)
    return ArrayDataset(ds.name, ds.images[rows], ds.labels[rows], ds.classes)


def _endless(loader: "Loader") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


def folder_dataset(name: str, folder: str | Path, classes: list[str] | None = None, *, labelled: bool = True,
                   image_size: int = 224, resize: int = 256, workers: int = 4) -> FolderDataset:
    """A FolderDataset of the images under ``folder``.

    ``classes``: the class sub-folders to read, in label order (label = position; e.g. a GReg ImageNet subset);
    None: every sub-folder in sorted order (ImageFolder's rule), or, when ``folder`` has no sub-folders with
    images, the images under it. ``labelled=False``: labels -1 (OOD and auxiliary sets). Only the listed class
    folders are scanned, so a 10-class subset of ImageNet does not list 1.28M files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataMissingError(f"{name}: missing folder {folder}")
    if classes is None:
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and _has_images(d))
    files, labels = [], []
    if classes:
        for k, c in enumerate(classes):
            d = folder / c
            found = _find_images(d) if d.is_dir() else []
            if not found:
                raise DataMissingError(f"{name}: class folder {d} is missing or has no images "
                                       f"({len(classes)} class folders expected under {folder})")
            files += found
            labels += [k if labelled else -1] * len(found)
    else:
        files = _find_images(folder)
        labels = [-1] * len(files)
    if not files:
        raise DataMissingError(f"{name}: no images under {folder}")
    return FolderDataset(name=name, files=tuple(files), labels=torch.tensor(labels, dtype=torch.int64),
                         classes=tuple(classes) if (classes and labelled) else None, image_size=image_size,
                         resize=resize, workers=workers)


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileInfo:
    """One file of a dataset: its place under the data root, original URL, checksum and where those come from."""

    path: str                    # relative to the data root
    url: str | None              # original distribution URL (None: no public download)
    checksum: str | None         # "md5:<hex>" or "sha256:<hex>"; None = unverified (existence/readability only)
    source: str = ""             # where the URL and checksum were taken from
    extract_to: str | None = None  # archives: folder (relative to the root) they are extracted into


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry; ``describe(name)`` prints it."""

    name: str
    kind: str                          # id | ood | aux
    title: str
    splits: tuple[str, ...] | None     # None: a single set, the split argument is ignored
    files: tuple[FileInfo, ...]        # what is downloaded (an archive, or the data files themselves)
    preprocessing: str
    citation: str
    folders: tuple[str, ...] = ()      # image-folder sets: candidate folders under the root (first found is used)
    transform: str = "as_is"           # image-folder sets: resize_crop | center_crop | as_is
    size: dict = field(default_factory=dict)  # split -> number of images of the full set
    notes: str = ""
    resolution: str = "32"             # "32": load() gives an ArrayDataset; "full": load_folder() only
    decode_size: int | None = None     # image-folder sets decoded at this size whatever image_size load() is given


_TV = "torchvision 0.29 source (torchvision/datasets/{})"
_C10 = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_C100 = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_CIFAR_CITE = "Krizhevsky, Learning Multiple Layers of Features from Tiny Images, tech. report, U. Toronto, 2009."
_ODIN_CITE = ("Liang, Li, Srikant, Enhancing the Reliability of Out-of-distribution Image Detection in Neural "
              "Networks (ODIN), ICLR 2018, who built the set")
_MOS_CITE = ("Huang & Li, MOS: Towards Scaling Out-of-distribution Detection for Large Semantic Space, CVPR 2021 "
             "(curated 10,000-image OOD subsets, concepts overlapping ImageNet-1k removed)")
_MOS_URL = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/"
_MOS_SRC = "URL: knn-ood README; md5: detectors (edadaltocg) source, one codebase, not recomputed by us"

_CIFAR10_FILES = (
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"), ("test_batch", "40351d587109b95175f43aff81a1287e"),
    ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
)
_CIFAR100_FILES = (
    ("train", "16019d7e3df5f24257cddd939b257f8d"), ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
    ("meta", "7973b15100ade9c7d40fb424638fde48"),
)


def _synthetic_entry(name: str, set_name: str, kind: str, title: str, splits) -> DatasetInfo:
    return DatasetInfo(
        name=name, kind=kind, title=title, splits=splits, files=(),
        preprocessing="none: generated at 32x32 by ood.synthetic.generate(set, n, seed); cached as "
                      "<root>/synthetic/<set>-s<seed>-n<n>.npz",
        citation="this project (ood/synthetic.py); no download",
        size={s: SYNTHETIC_SIZES[s] for s in (splits or (set_name,))},
    )


#: LSUN-C's archive, read by two registry sets: ``lsun-c`` (centre 32x32, GReg) and ``lsun-c-36`` (as stored, Energy).
_LSUN_C_FILES = (FileInfo("LSUN.tar.gz", "https://www.dropbox.com/s/fhtsw1m3qxlwj6h/LSUN.tar.gz?dl=1",
                          "md5:458a0a0ab8e5f1cb4516d7400568e460",
                          "URL: ODIN README (facebookresearch/odin); md5: pytorch-ood and detectors (edadaltocg) source, "
                          "not recomputed by us", extract_to=""),)

DATASETS: dict[str, DatasetInfo] = {}


def _mos_entry(name: str, folder: str, checksum: str, citation: str) -> DatasetInfo:
    """One of the ImageNet OOD subsets of Huang & Li 2021 (MOS): 10,000 images, ``<folder>.tar.gz`` from their page."""
    return DatasetInfo(
        name=name, kind="ood", title=f"{folder} OOD subset for ImageNet (10,000 images)", splits=None,
        files=(FileInfo(f"{folder}.tar.gz", _MOS_URL + f"{folder}.tar.gz", checksum, _MOS_SRC, extract_to=""),),
        folders=(folder,), resolution="full",
        preprocessing="full resolution; load_folder with the ImageNet test transform",
        citation=f"{citation}; " + _MOS_CITE, size={"test": 10000},
    )


def _register(*infos: DatasetInfo) -> None:
    for info in infos:
        DATASETS[info.name] = info


_register(
    _synthetic_entry("synthetic", "train", "id", "Synthetic benchmark, ID: 10 object classes on procedural backgrounds",
                     ("train", "test")),
    _synthetic_entry("synthetic-backgrounds", "backgrounds", "ood",
                     "Synthetic OOD: the ID backgrounds with no object (shares the ID backgrounds)", None),
    _synthetic_entry("synthetic-novel-objects", "novel-objects", "ood",
                     "Synthetic OOD: unseen object shapes on the ID backgrounds", None),
    _synthetic_entry("synthetic-textures", "textures", "ood", "Synthetic OOD: new textures (no ID background)", None),
    _synthetic_entry("synthetic-noise", "noise", "ood", "Synthetic OOD: noise images", None),
    _synthetic_entry("synthetic-aux", "aux", "aux",
                     "Synthetic auxiliary outliers from disjoint generators (stands in for 300K random images)", None),
    DatasetInfo(
        name="cifar10", kind="id", title="CIFAR-10 (50,000 train / 10,000 test, 10 classes)", splits=("train", "test"),
        files=(FileInfo("cifar-10-python.tar.gz", _C10, "md5:c58f30108f718f92721af3b95e74349a", _TV.format("cifar.py"),
                        extract_to=""),)
        + tuple(FileInfo(f"cifar-10-batches-py/{f}", None, f"md5:{h}", _TV.format("cifar.py")) for f, h in _CIFAR10_FILES),
        preprocessing="none (32x32); read by torchvision.datasets.CIFAR10, which checks the md5 of all 7 files",
        citation=_CIFAR_CITE, size={"train": 50000, "test": 10000},
        notes="torchvision's integrity check needs all five training batches even for the test split.",
    ),
    DatasetInfo(
        name="cifar100", kind="id", title="CIFAR-100 (50,000 train / 10,000 test, 100 fine classes); also near-OOD for CIFAR-10",
        splits=("train", "test"),
        files=(FileInfo("cifar-100-python.tar.gz", _C100, "md5:eb9058c3a382ffc7106e4002c42a8d85", _TV.format("cifar.py"),
                        extract_to=""),)
        + tuple(FileInfo(f"cifar-100-python/{f}", None, f"md5:{h}", _TV.format("cifar.py")) for f, h in _CIFAR100_FILES),
        preprocessing="none (32x32); train: torchvision.datasets.CIFAR100; test: the standard pickle cifar-100-python/test "
                      "read directly after its md5 check (needs only test + meta), fine labels",
        citation=_CIFAR_CITE, size={"train": 50000, "test": 10000},
    ),
    DatasetInfo(
        name="svhn", kind="ood", title="SVHN test set (26,032 digit crops)", splits=("test",),
        files=(FileInfo("svhn/test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                        "md5:eb5a983be6a315427106f1b164d9cef3", _TV.format("svhn.py")),),
        preprocessing="none (32x32), all 26,032 test images; read by torchvision.datasets.SVHN; labels set to -1",
        citation="Netzer et al., Reading Digits in Natural Images with Unsupervised Feature Learning, NIPS Workshop 2011.",
        size={"test": 26032},
        notes="The energy/GReg code uses the whole test split (the KNN code a subset from select_svhn_data.py).",
    ),
    DatasetInfo(
        name="textures", kind="ood", title="Textures (DTD), all 5,640 images of 47 categories", splits=("test",),
        files=(FileInfo("dtd/dtd-r1.0.1.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                        "md5:fff73e5086ae6bdbea199a49dfb8a4c1", _TV.format("dtd.py"), extract_to="dtd"),),
        folders=("dtd/dtd/images", "dtd/images"), transform="resize_crop",
        preprocessing="resize the shorter side to 32 (bilinear, PIL) then center-crop 32x32, as trn.Resize(32), "
                      "trn.CenterCrop(32) in the energy_ood and Greg-OOD test code",
        citation="Cimpoi et al., Describing Textures in the Wild, CVPR 2014.", size={"test": 5640},
        notes="Folder <root>/dtd/dtd/images (torchvision.datasets.DTD layout, used for download=True) or "
              "<root>/dtd/images (the tarball extracted into the root, as in the energy/KNN code).",
    ),
    DatasetInfo(
        name="dtd10", kind="ood", title="Textures (DTD, 10 categories), 1,200 images at 32x32", splits=("test",),
        files=(FileInfo("dtd10-32.tar.xz", None,
                        "sha256:6a05aff4ab4f882ec1119299c3ab37246f782db6d179bbde15650633026ff477",
                        "../shared/data/dtd10-32.{tar.xz,sha256} beside the checkout", extract_to=""),),
        folders=("dtd10-32",), transform="as_is",
        preprocessing="none here: each image was resized so that its shorter side is 32 px (bilinear, antialiased) "
                      "and centre-cropped to 32x32 before it was saved as PNG, as the Outlier Exposure code prepares "
                      "Textures for CIFAR models",
        citation="Cimpoi et al., Describing Textures in the Wild, CVPR 2014.", size={"test": 1200},
        notes="A SUBSET of Textures: every image of the first 10 of DTD's 47 categories (banded ... crystalline, 120 "
              "each), kept beside the project (../shared/data). Name it 'Textures (DTD, 10 categories)' wherever a "
              "result uses it; its numbers are not the papers' Textures column (all 5,640 images).",
    ),
    DatasetInfo(
        name="places365", kind="ood", title="Places365 test images, a 10,000-image subset", splits=("test",),
        files=(FileInfo("places365/test_256.tar", "http://data.csail.mit.edu/places/places365/test_256.tar",
                        "md5:f532f6ad7b582262a2ec8009075e186b", _TV.format("places365.py"), extract_to="places365"),),
        folders=("places365",), transform="resize_crop",
        preprocessing="resize the shorter side to 32 (bilinear, PIL) then center-crop 32x32 (energy_ood / Greg-OOD code)",
        citation="Zhou et al., Places: A 10 Million Image Database for Scene Recognition, TPAMI 2017.",
        size={"test": PLACES365_N},
        notes="Which 10,000: if <root>/places365/places365_test_list.txt exists (the list of the KNN-OOD / CIDER code, "
              "github.com/deeplearning-wisc/knn-ood), its images; else if the folder holds at most 10,000 images (the "
              "codebases' test_subset folder), all of them; else our documented sample: the sorted image paths, "
              f"numpy.random.default_rng({PLACES365_SAMPLE_SEED}).choice(N, 10000, replace=False), kept in sorted order. "
              "The energy_ood code instead draws 2,000 images per evaluation from its places365 folder.",
    ),
    DatasetInfo(
        name="lsun-c", kind="ood", title="LSUN-C (LSUN crop), 10,000 images of 36x36", splits=("test",),
        files=_LSUN_C_FILES,
        folders=("LSUN", "LSUN_C"), transform="center_crop",
        preprocessing="center-crop 36x36 -> 32x32 (Greg-OOD code, trn.CenterCrop(32); the energy_ood code feeds 36x36)",
        citation="Yu et al., LSUN, arXiv:1506.03365, 2015; " + _ODIN_CITE, size={"test": 10000},
    ),
    DatasetInfo(
        name="lsun-c-36", kind="ood", title="LSUN-C (LSUN crop), 10,000 images as stored, 36x36", splits=("test",),
        files=_LSUN_C_FILES,
        folders=("LSUN", "LSUN_C"), transform="as_is", decode_size=36,
        preprocessing="none: the 36x36 images as stored, as the energy_ood code feeds them (CIFAR/test.py:262-263, "
                      "ToTensor + Normalize only); the networks pool globally, so 36 px is accepted",
        citation="Yu et al., LSUN, arXiv:1506.03365, 2015; " + _ODIN_CITE, size={"test": 10000},
        notes="The same files as lsun-c. Name it in a profile's benchmark.ood (e.g. {lsun-c: lsun-c-36}) with "
              "evaluate.protocol energy-readme to put numbers beside the Energy README's; GReg's detect.py and the "
              "default lsun-c crop the centre 32x32.",
    ),
    DatasetInfo(
        name="lsun-r", kind="ood", title="LSUN-R (LSUN resize), 10,000 images of 32x32", splits=("test",),
        files=(FileInfo("LSUN_resize.tar.gz", "https://www.dropbox.com/s/moqh2wh8696c3yl/LSUN_resize.tar.gz?dl=1",
                        "md5:278b7b31c8cb7e804a1465a8ce03a2dc",
                        "URL: ODIN README; md5: pytorch-ood and detectors (edadaltocg) source, not recomputed by us", extract_to=""),),
        folders=("LSUN_resize", "LSUN_R"), transform="as_is",
        preprocessing="none (already 32x32; any other size: shorter side to 32 + center crop)",
        citation="Yu et al., LSUN, arXiv:1506.03365, 2015; " + _ODIN_CITE, size={"test": 10000},
    ),
    DatasetInfo(
        name="isun", kind="ood", title="iSUN, 8,925 images of 32x32", splits=("test",),
        files=(FileInfo("iSUN.tar.gz", "https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz?dl=1",
                        "md5:be77b0f2c26fda898afac5f99645ee70",
                        "URL: ODIN README; md5: detectors (edadaltocg) source, one codebase, not recomputed by us", extract_to=""),),
        folders=("iSUN",), transform="as_is",
        preprocessing="none (already 32x32; any other size: shorter side to 32 + center crop)",
        citation="Xu et al., TurkerGaze: Crowdsourcing Saliency with Webcam based Eye Tracking, arXiv:1504.06755, 2015; "
                 + _ODIN_CITE, size={"test": 8925},
    ),
    DatasetInfo(
        name="300k-random", kind="aux", title="300K random images (Tiny Images subset, 300,000 x 32x32)", splits=("train",),
        files=(FileInfo("300K_random_images.npy", "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",
                        "md5:64ca64357de98351f28454274a112dc3",
                        "URL: outlier-exposure README (hendrycks); md5: pytorch-ood source, not recomputed by us"),),
        preprocessing="none: the uint8 (300000, 32, 32, 3) array, memory-mapped (only the rows used are read)",
        citation="Hendrycks, Mazeika, Dietterich, Deep Anomaly Detection with Outlier Exposure, ICLR 2019 "
                 "(drawn from 80 Million Tiny Images, Torralba et al. 2008, since withdrawn by its authors).",
        size={"train": 300000},
        notes="The auxiliary outlier set of the Energy-OE and GReg CIFAR experiments. 80M Tiny Images was withdrawn "
              "by its authors; tinyimagenet32 stands in where this file cannot be had.",
    ),
    DatasetInfo(
        name="tinyimagenet32", kind="aux",
        title="TinyImageNet-200 training images re-encoded at 32x32 (100,000; a stand-in auxiliary outlier pool)",
        splits=("train",),
        files=(FileInfo("tinyimagenet32-train.tar.xz", None,
                        "sha256:78b12ee3c29de4a458749a014eb6cefea6b225bd9be339da742f03b9451dab02",
                        "../shared/data/tinyimagenet32-train.{tar.xz,sha256} beside the checkout", extract_to=""),),
        folders=("tinyimagenet32/train",), transform="as_is",
        preprocessing="none (32x32 JPEG decoded once; cached as <root>/tinyimagenet32/train-uint8.npy); labels -1",
        citation="Le & Yang, Tiny ImageNet Visual Recognition Challenge, CS231N, 2015 (images from ImageNet, "
                 "Russakovsky et al., IJCV 2015).",
        size={"train": 100000},
        notes="NOT the official files: a re-encoded 32x32 JPEG copy kept beside the project (../shared/data), with no "
              "public URL; some of its 200 classes overlap CIFAR's. It stands in for 300K random images / ImageNet-RC "
              "where those cannot be downloaded: say so wherever a result uses it.",
    ),
    DatasetInfo(
        name="imagenet", kind="id", title="ImageNet-1k (ILSVRC-2012), user-provided ImageFolder train/ and val/",
        splits=("train", "val"),
        files=(FileInfo("imagenet", "https://image-net.org/download.php (login; licence terms)", None,
                        "not downloadable automatically"),),
        folders=("imagenet",), resolution="full",
        preprocessing="full resolution; load_folder(name, root, transform) with the caller's transform "
                      "(e.g. Resize(256), CenterCrop(224))",
        citation="Russakovsky et al., ImageNet Large Scale Visual Recognition Challenge, IJCV 2015.",
        size={"train": 1281167, "val": 50000},
        notes="Put (or symlink) the ImageFolder layout at <root>/imagenet/train/<wnid>/*.JPEG and "
              "<root>/imagenet/val/<wnid>/*.JPEG.",
    ),
    _mos_entry("inaturalist", "iNaturalist", "md5:5be6ea8aa027d7b631916427b32cb335",
               "Van Horn et al., The iNaturalist Species Classification and Detection Dataset, CVPR 2018"),
    _mos_entry("sun", "SUN", "md5:8469c3ada62211477954ec1be53b12d0",
               "Xiao et al., SUN Database: Large-scale Scene Recognition from Abbey to Zoo, CVPR 2010"),
    _mos_entry("places", "Places", "md5:b5cb5eba2754ae2a28beea8718db699a", "Zhou et al., Places, TPAMI 2017"),
    DatasetInfo(
        name="imagenet-textures", kind="ood", title="Textures (DTD), all 5,640 images, full resolution (ImageNet profile)",
        splits=None,
        files=(FileInfo("dtd/dtd-r1.0.1.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                        "md5:fff73e5086ae6bdbea199a49dfb8a4c1", _TV.format("dtd.py"), extract_to="dtd"),),
        folders=("dtd/dtd/images", "dtd/images"), resolution="full",
        preprocessing="full resolution; load_folder with the ImageNet test transform",
        citation="Cimpoi et al., Describing Textures in the Wild, CVPR 2014.", size={"test": 5640},
    ),
)


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def describe(name: str, full: bool = False) -> str:
    """One line (title; role; source files with checksums) or, with ``full``, every field of the entry."""
    info = _info(name)
    if info.files:
        f = info.files[0]
        src = f"<root>/{f.path} from {f.url or f.source} ({f.checksum or 'checksum unverified'})"
    else:
        src = "generated by ood.synthetic, no download"
    line = f"{info.title} [{info.kind}]; {src}"
    if not full:
        return line
    rows = [f"{info.name}: {info.title}", f"  role: {info.kind}",
            f"  splits: {', '.join(info.splits) if info.splits else 'one set (split ignored)'}"]
    if info.size:
        rows.append("  size: " + ", ".join(f"{k} {v:,}" for k, v in info.size.items()))
    for f in info.files:
        rows.append(f"  file: <root>/{f.path}  from {f.url or 'no public URL'}  "
                    f"{f.checksum or 'checksum: unverified'}  [{f.source}]")
    if info.folders:
        rows.append("  folder: " + " or ".join(f"<root>/{d}" for d in info.folders))
    rows += [f"  preprocessing: {info.preprocessing}", f"  cite: {info.citation}"]
    if info.notes:
        rows.append(f"  notes: {info.notes}")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------
# Files: checksums, missing-file messages, archives
# ----------------------------------------------------------------------------------------------------------

def file_checksum(path: str | Path, algo: str = "md5") -> str:
    """Hex digest (``md5`` or ``sha256``) of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, fi: FileInfo) -> None:
    """Raise ChecksumError if ``path`` does not match ``fi.checksum``; unverified entries: must be readable."""
    if fi.checksum is None:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            raise ChecksumError(f"{path} cannot be read ({e}); it was not used. Replace it with a fresh copy from "
                                f"{fi.url}") from None
        return
    algo, want = fi.checksum.split(":", 1)
    got = file_checksum(path, algo)
    if got != want:
        raise ChecksumError(f"{path} has {algo} {got}, expected {want} ({fi.source}): the file is corrupt or truncated "
                            f"and was not used. Delete it and download it again from {fi.url or 'its source'}"
                            f"{_shared_hint(fi)}.")


def _shared_hint(fi: FileInfo) -> str:
    name = Path(fi.path).name
    if (SHARED_DATA / fi.path).with_name(name + ".xz").is_file() or (SHARED_DATA / fi.path).is_file():
        return f" (an offline copy is in {SHARED_DATA})"
    return ""


def _missing(name: str, path: Path, fi: FileInfo, root: Path, more: str = "", extra: str = "") -> DataMissingError:
    how = f"download {fi.url}" if fi.url and fi.url.startswith("http") else f"get it from {fi.url or fi.source}"
    where = (f"put it at {root / fi.path} (it is extracted into {root / fi.extract_to if fi.extract_to else root})"
             if fi.extract_to is not None else f"put it at {root / fi.path}")
    dl = f", or call load({name!r}, download=True) where the network is reachable" if fi.url and fi.url.startswith("http") else ""
    return DataMissingError(f"{name}: missing {path}{more}; {how} ({fi.checksum or 'checksum unverified'}) and {where}"
                            f"{dl}{extra}.")


def _download(name: str, fi: FileInfo, root: Path) -> Path:
    """Download ``fi`` to ``root/fi.path`` with torchvision's downloader (md5-checked); failures -> DataMissingError."""
    from torchvision.datasets.utils import download_url

    dest = root / fi.path
    md5 = fi.checksum.split(":", 1)[1] if fi.checksum and fi.checksum.startswith("md5:") else None
    try:
        download_url(fi.url, str(dest.parent), dest.name, md5=md5)
    except Exception as e:  # network errors come in many types (URLError, HTTPError, OSError, RuntimeError)
        raise DataMissingError(f"{name}: download of {fi.url} to {dest} failed ({type(e).__name__}: {e}); download it "
                               f"by hand ({fi.checksum or 'checksum unverified'}) and put it at {dest}.") from None
    if not dest.is_file():
        raise DataMissingError(f"{name}: download of {fi.url} did not produce {dest}; download it by hand "
                               f"({fi.checksum or 'checksum unverified'}) and put it there.")
    return dest


def _extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` through a temporary folder, so a crash leaves no half-extracted set."""
    from torchvision.datasets.utils import extract_archive

    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        extract_archive(str(archive), str(tmp))
        for item in tmp.iterdir():
            target = dest / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _atomic_save(path: Path, write) -> None:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------------
# load()
# ----------------------------------------------------------------------------------------------------------

def _check_split(info: DatasetInfo, split: str) -> str:
    if info.splits is None:
        return split
    if split not in info.splits:
        raise ValueError(f"unknown split {split!r} for dataset {info.name!r}; allowed: {', '.join(info.splits)}")
    return split


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
    info = _info(name)
    if info.resolution != "32":
        raise ValueError(f"dataset {name!r} is a full-resolution image folder: use load_folder({name!r}, root, transform)")
    split = _check_split(info, split)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be an integer >= 1")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"n={n!r} must be None or an integer >= 1")
    root = Path(root) if root is not None else DATA_ROOT
    if name.startswith("synthetic"):
        _need_32(name, image_size)
        set_name = split if name == "synthetic" else name[len("synthetic-"):]
        return _load_synthetic(name, set_name, root, seed, n)
    if info.folders:
        ds = _load_image_folder(info, root, split, info.decode_size or image_size, download, n=n, seed=seed)
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
            warnings.warn(f"{path} is unreadable ({type(e).__name__}: {e}); regenerating it")
            x = y = None
    if x is None:
        x, y = synthetic.generate(set_name, n, seed=seed)
        x, y = np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64)
        if x.shape != (n, 32, 32, 3) or y.shape != (n,):
            raise ValueError(f"ood.synthetic.generate({set_name!r}, {n}) returned images {x.shape} and labels {y.shape}; "
                             f"expected ({n}, 32, 32, 3) and ({n},)")
        _atomic_save(path, lambda f: np.savez(f, x=x, y=y, generator=np.array(fp)))
    classes = tuple(synthetic.CLASSES) if name == "synthetic" else None
    return _from_hwc(name, x, y, classes)


# --- CIFAR ---------------------------------------------------------------------------------------------------

def _files_under(info: DatasetInfo, prefix: str) -> list[FileInfo]:
    return [f for f in info.files if f.path.startswith(prefix)]


def _require(info: DatasetInfo, root: Path, needed: list[FileInfo], extra: str = "") -> None:
    """Extract the set's archive if it is under the root and files are missing (after its checksum); then
    DataMissingError naming the first missing file of ``needed`` and the archive that holds it."""
    missing = [f for f in needed if not (root / f.path).is_file()]
    archive = info.files[0]
    if missing and all((SHARED_DATA / (f.path + ".xz")).is_file() for f in missing):
        for f in missing:
            _unpack_shared(f, root)
        missing = []
    if missing and archive.extract_to is not None and (root / archive.path).is_file():
        _verify(root / archive.path, archive)
        _extract(root / archive.path, root / archive.extract_to)
        missing = [f for f in needed if not (root / f.path).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of its {len(needed)} files)" if len(missing) > 1 else ""
        hint = (f"; offline: {SHARED_DATA}/unpack {root} writes the official CIFAR files"
                if (SHARED_DATA / "unpack").is_file() and info.name.startswith("cifar") else "")
        raise _missing(info.name, root / missing[0].path, archive, root, more, extra + hint)


def _unpack_shared(fi: FileInfo, root: Path) -> None:
    """Decompress the official file ``fi`` from its ``.xz`` copy in ``SHARED_DATA`` to ``root/fi.path`` (checked
    against ``fi.checksum`` before it is moved into place: a corrupt copy leaves nothing behind)."""
    import lzma

    dest = root / fi.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, lzma.open(SHARED_DATA / (fi.path + ".xz")) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        _verify(Path(tmp), fi)
        os.replace(tmp, dest)
    except lzma.LZMAError as e:
        raise ChecksumError(f"{SHARED_DATA / (fi.path + '.xz')} cannot be decompressed ({e}); it was not used. "
                            f"Replace it, or download {fi.url or fi.source} by hand.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _first_corrupt(root: Path, files: list[FileInfo]) -> None:
    for f in files:
        _verify(root / f.path, f)


def _load_cifar10(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    import torchvision

    needed = _files_under(info, "cifar-10-batches-py/")
    if not download:
        _require(info, root, needed)
    try:
        tv = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        _require(info, root, needed)
        _first_corrupt(root, needed)
        raise
    except Exception as e:  # download failure
        raise DataMissingError(f"cifar10: download of {info.files[0].url} failed ({type(e).__name__}: {e}); download "
                               f"it by hand ({info.files[0].checksum}) and extract it into {root}.") from None
    return _from_hwc("cifar10", tv.data, tv.targets, tuple(tv.classes))


def _load_cifar100(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    import torchvision

    files = {Path(f.path).name: f for f in _files_under(info, "cifar-100-python/")}
    if split == "train":
        needed = list(files.values())
        if not download:
            _require(info, root, needed)
        try:
            tv = torchvision.datasets.CIFAR100(str(root), train=True, download=download)
        except RuntimeError:
            _require(info, root, needed)
            _first_corrupt(root, needed)
            raise
        except Exception as e:
            raise DataMissingError(f"cifar100: download of {info.files[0].url} failed ({type(e).__name__}: {e}); "
                                   f"download it by hand ({info.files[0].checksum}) and extract it into {root}.") from None
        return _from_hwc("cifar100", tv.data, tv.targets, tuple(tv.classes))
    # test split: only test + meta are needed (torchvision's class would insist on the training file)
    needed = [files["test"], files["meta"]]
    if download and any(not (root / f.path).is_file() for f in needed):
        try:
            torchvision.datasets.CIFAR100(str(root), train=False, download=True)
        except Exception as e:
            raise DataMissingError(f"cifar100: download of {info.files[0].url} failed ({type(e).__name__}: {e}); "
                                   f"download it by hand ({info.files[0].checksum}) and extract it into {root}.") from None
    _require(info, root, needed, extra=" (the test split needs only cifar-100-python/test and meta)")
    for f in needed:
        _verify(root / f.path, f)
    with open(root / files["test"].path, "rb") as fh:
        entry = pickle.load(fh, encoding="latin1")
    with open(root / files["meta"].path, "rb") as fh:
        classes = tuple(pickle.load(fh, encoding="latin1")["fine_label_names"])
    x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return ArrayDataset("cifar100", torch.from_numpy(x.copy()),
                        torch.as_tensor(entry["fine_labels"], dtype=torch.int64), classes)


# --- SVHN, 300K random images ----------------------------------------------------------------------------------

def _load_svhn(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    import torchvision

    fi = info.files[0]
    path = root / fi.path
    if not download and not path.is_file():
        raise _missing("svhn", path, fi, root)
    if path.is_file():
        _verify(path, fi)
    try:
        tv = torchvision.datasets.SVHN(str(path.parent), split="test", download=download)
    except RuntimeError:
        if path.is_file():
            _verify(path, fi)
        raise
    except Exception as e:
        raise DataMissingError(f"svhn: download of {fi.url} failed ({type(e).__name__}: {e}); download it by hand "
                               f"({fi.checksum}) and put it at {path}.") from None
    images = torch.from_numpy(np.ascontiguousarray(tv.data))           # (N, 3, 32, 32) uint8
    return ArrayDataset("svhn", images, torch.full((len(images),), -1, dtype=torch.int64))


def _load_300k(info: DatasetInfo, root: Path, split: str, download: bool) -> ArrayDataset:
    fi = info.files[0]
    path = root / fi.path
    if not path.is_file():
        if not download:
            raise _missing("300k-random", path, fi, root)
        _download("300k-random", fi, root)
    _verify(path, fi)
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


# --- image folders ---------------------------------------------------------------------------------------------

def _find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden entries skipped), sorted by relative path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in _IMAGE_EXTS]
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def _has_images(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    for dirpath, dirnames, filenames in os.walk(folder):
        if any(not f.startswith(".") and Path(f).suffix.lower() in _IMAGE_EXTS for f in filenames):
            return True
    return False


def _archive_candidates(info: DatasetInfo, root: Path) -> list[Path]:
    fi = info.files[0]
    cands = [root / fi.path]
    if fi.url is None:  # kept beside the project only (tinyimagenet32, dtd10): the copy in ../shared/data
        cands.append(SHARED_DATA / Path(fi.path).name)
    return cands


def _locate_folder(info: DatasetInfo, root: Path, download: bool) -> Path:
    """The set's image folder; extracts its archive (after the checksum) or downloads it when asked."""
    def found():
        for d in info.folders:
            if _has_images(root / d):
                return root / d
        return None

    folder = found()
    if folder is not None:
        return folder
    fi = info.files[0]
    archive = next((p for p in _archive_candidates(info, root) if p.is_file()), None)
    if archive is None and download and fi.url and fi.url.startswith("http"):
        if info.name in ("textures", "imagenet-textures"):
            import torchvision  # torchvision's DTD downloads and extracts into <root>/dtd (md5-checked)

            try:
                torchvision.datasets.DTD(str(root), download=True)
            except Exception as e:
                raise DataMissingError(f"{info.name}: download of {fi.url} failed ({type(e).__name__}: {e}); download "
                                       f"it by hand ({fi.checksum}) and put it at {root / fi.path}.") from None
            if (folder := found()) is not None:
                return folder
        archive = _download(info.name, fi, root)
    if archive is None:
        where = " or ".join(str(root / d) for d in info.folders)
        raise _missing(info.name, root / fi.path, fi, root, more=f" (and no image folder {where})")
    if archive.is_file():
        _verify(archive, fi)
        _extract(archive, root / (fi.extract_to or ""))
    folder = found()
    if folder is None:
        raise DataMissingError(f"{info.name}: {archive} was extracted into {root / (fi.extract_to or '')} but holds none "
                               f"of the folders {', '.join(info.folders)} with images; check the archive.")
    return folder


def _select_places365(folder: Path, files: list[Path]) -> list[Path]:
    """The 10,000 Places365 test images: the KNN list if present, else all (<= 10,000) or our seeded sample."""
    lst = folder / "places365_test_list.txt"
    if lst.is_file():
        names = [Path(line.strip()).name for line in lst.read_text().splitlines() if line.strip()]
        by_name = {p.name: p for p in files}
        absent = [nm for nm in names if nm not in by_name]
        if absent:
            raise DataMissingError(f"places365: {len(absent)} images of {lst} are not under {folder} (first: {absent[0]}); "
                                   f"extract test_256.tar (http://data.csail.mit.edu/places/places365/test_256.tar, "
                                   f"{DATASETS['places365'].files[0].checksum}) into {folder}.")
        return sorted((by_name[nm] for nm in names), key=lambda p: p.relative_to(folder).as_posix())
    if len(files) <= PLACES365_N:
        return files
    pick = np.sort(np.random.default_rng(PLACES365_SAMPLE_SEED).choice(len(files), PLACES365_N, replace=False))
    return [files[i] for i in pick]


def _decode(files: list[Path], size: int, transform: str) -> np.ndarray:
    """Decode image files to uint8 (N, size, size, 3): resize_crop = shorter side to size (bilinear) + center crop;
    center_crop = center crop only; as_is = unchanged when already size x size, else resize_crop."""
    from PIL import Image
    import torchvision.transforms.functional as TF

    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
        except Exception as e:
            raise ChecksumError(f"{p} cannot be decoded ({type(e).__name__}: {e}): the file is corrupt or truncated "
                                f"and the set was not loaded. Delete the folder and extract its archive again.") from None
        if transform == "resize_crop" or (transform == "as_is" and im.size != (size, size)):
            im = TF.center_crop(TF.resize(im, size), size)
        elif transform == "center_crop":
            im = TF.center_crop(im, size)
        out[i] = np.asarray(im)
    return out


def _load_image_folder(info: DatasetInfo, root: Path, split: str, image_size: int, download: bool,
                       n: int | None = None, seed: int = 0) -> ArrayDataset:
    """The set's images, decoded once and cached as ``<stem>-uint8.npy``. With ``n`` and no cache yet, only the
    subset's files are decoded (the images ``ArrayDataset.subset(n, seed)`` of the whole set would hold) and
    nothing is cached: a test that draws 512 of TinyImageNet-32's 100,000 images decodes 512."""
    folder = _locate_folder(info, root, download)
    files = _find_images(folder)
    if info.name == "places365":
        files = _select_places365(folder, files)
    stem = split if image_size == 32 else f"{split}-{image_size}px"
    cache = (root / "tinyimagenet32" if info.name == "tinyimagenet32" else folder) / f"{stem}-uint8.npy"
    if n is not None and not cache.is_file():
        idx = _subset_indices(info.name, len(files), n, seed)
        if idx is not None:
            x = _decode([files[i] for i in idx.tolist()], image_size, info.transform)
            images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
            return ArrayDataset(info.name, images, torch.full((len(images),), -1, dtype=torch.int64))
    x = None
    if cache.is_file():
        try:
            x = np.load(cache, allow_pickle=False)
            if x.shape != (len(files), image_size, image_size, 3) or x.dtype != np.uint8:
                x = None
        except Exception:
            x = None
    if x is None:
        x = _decode(files, image_size, info.transform)
        try:
            _atomic_save(cache, lambda f: np.save(f, x))
        except OSError as e:
            warnings.warn(f"could not write the decoded cache {cache} ({e}); the images will be decoded again next time")
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    return ArrayDataset(info.name, images, torch.full((len(files),), -1, dtype=torch.int64))


def locate_folder(name: str, root=None, *, download: bool = False) -> Path:
    """The image folder of a registry folder set (e.g. ``inaturalist``) under ``root``: extracted from its archive
    (after its checksum) when needed, downloaded when ``download`` and a URL is known, else ``DataMissingError``."""
    info = _info(name)
    if not info.folders or name == "imagenet":
        raise ValueError(f"dataset {name!r} has no single image folder; allowed: "
                         f"{', '.join(k for k, v in DATASETS.items() if v.folders and k != 'imagenet')}")
    return _locate_folder(info, Path(root) if root is not None else DATA_ROOT, download)


def load_folder(name: str, root=None, transform=None, *, split: str = "val", download: bool = False):
    """A ``torchvision.datasets.ImageFolder`` over a registry set's image folder (full resolution, ``transform`` applied).

    For the ImageNet profile: ``imagenet`` (``split`` train or val: ``<root>/imagenet/<split>``), and the OOD sets
    ``inaturalist``, ``sun``, ``places``, ``imagenet-textures`` (split ignored); also accepted for the 32x32 folder
    sets. Missing folders are extracted from their archive under the root (after its checksum where one is known)
    or, with ``download=True``, downloaded; otherwise ``DataMissingError``.
    """
    import torchvision

    info = _info(name)
    if not info.folders:
        raise ValueError(f"dataset {name!r} is not an image folder; allowed: "
                         f"{', '.join(k for k, v in DATASETS.items() if v.folders)} (use load() for {name!r})")
    root = Path(root) if root is not None else DATA_ROOT
    if name == "imagenet":
        split = _check_split(info, split)
        folder = root / "imagenet" / split
        if not folder.is_dir():
            raise DataMissingError(f"imagenet: missing {folder}; ImageNet-1k cannot be downloaded automatically: get it "
                                   f"from https://image-net.org (licence) and put (or symlink) the ImageFolder layout at "
                                   f"{folder}/<wnid>/*.JPEG (checksum unverified).")
    else:
        folder = _locate_folder(info, root, download)
    return torchvision.datasets.ImageFolder(str(folder), transform=transform)
