"""Image folders: streamed full-resolution sets (``FolderDataset``, ``load_folder``) and 32x32 folder sets decoded once.

* ``load_folder(name)`` -> ``torchvision.datasets.ImageFolder`` for the full-resolution ImageNet profile
  (ImageNet-1k, and the iNaturalist / SUN / Places / Textures OOD sets of Huang & Li 2021).
* image-folder sets of ``load`` (LSUN-C, LSUN-R, iSUN, Textures, Places365, TinyImageNet-32) are decoded once,
  resized to 32x32 the way the papers' code does it, and cached as a ``.npy`` beside the images.
* derived sets (``DatasetInfo.derivation``: ``dtd10``, ``tinyimagenet32``) are located, or derived from their
  official archives, by ``ood.data.derive``.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ood.data import registry
from ood.data.arrays import ArrayDataset, Loader, endless, subset_indices
from ood.data.derive import locate_derived
from ood.data.fetching import (
    ChecksumError,
    DataMissingError,
    archive_candidates,
    atomic_save,
    data_lock,
    data_root,
    download_file,
    extract,
    from_mirrors,
    missing_error,
    verify,
)
from ood.data.registry import DATASETS, DatasetInfo, check_split, dataset_info

_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


class _FolderItems(torch.utils.data.Dataset):
    """Decoded, transformed items of a FolderDataset for a DataLoader: ``(uint8 (3, S, S), label)``.

    ``seed`` None: the evaluation transform. Otherwise the training transform, its random draws from a generator
    seeded with ``(seed, index)``, so an epoch's augmentations do not depend on the number of workers.
    """

    def __init__(self, ds: "FolderDataset", seed: int | None):
        import torchvision.transforms as T

        self.files, self.labels, self.seed = ds.files, ds.labels, seed
        if seed is None:   # evaluation: standard ImageNet protocol, Resize(256) + CenterCrop(224) [code: torchvision]
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
            raise ValueError(f"FolderDataset {self.name!r}: resize={self.resize} must be >= "
                             f"image_size={self.image_size}")

    def __len__(self) -> int:
        return len(self.files)

    def to(self, device) -> "FolderDataset":
        """The same set: files stay on disk and batches go to the loader's device."""
        return self

    def subset(self, n: int, seed: int = 0) -> "FolderDataset":
        """A uniformly random subset of ``n`` files, by the same rule as ``ArrayDataset.subset``."""
        idx = subset_indices(self.name, len(self), n, seed)
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
            stream = self._streams[key] = endless(loader)
        return next(stream)[0]


def take_rows(ds: "ArrayDataset | FolderDataset", rows: slice) -> "ArrayDataset | FolderDataset":
    """The set restricted to ``rows`` (a slice), in order: a process's share of an evaluation set."""
    if isinstance(ds, FolderDataset):
        return FolderDataset(ds.name, ds.files[rows], ds.labels[rows], ds.classes, ds.image_size, ds.resize, ds.workers)
    return ArrayDataset(ds.name, ds.images[rows], ds.labels[rows], ds.classes)


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
    for _dirpath, _dirnames, filenames in os.walk(folder):
        if any(not f.startswith(".") and Path(f).suffix.lower() in _IMAGE_EXTS for f in filenames):
            return True
    return False



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
    if info.derivation:
        return locate_derived(info, root, download, found)
    fi = info.files[0]
    archive = next((p for p in archive_candidates(info, root) if p.is_file()), None)
    if archive is None:
        archive = from_mirrors(info.name, fi, root, download)
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
        archive = download_file(info.name, fi, root)
    if archive is None:
        where = " or ".join(str(root / d) for d in info.folders)
        raise missing_error(info.name, root / fi.path, fi, root, more=f" (and no image folder {where})")
    if archive.is_file():
        verify(archive, fi)
        extract(archive, root / (fi.extract_to or ""))
    folder = found()
    if folder is None:
        raise DataMissingError(f"{info.name}: {archive} was extracted into {root / (fi.extract_to or '')} but holds "
                               f"none of the folders {', '.join(info.folders)} with images; check the archive.")
    return folder


def _select_places365(folder: Path, files: list[Path]) -> list[Path]:
    """The 10,000 Places365 test images: the KNN list if present, else all (<= 10,000) or our seeded sample."""
    lst = folder / "places365_test_list.txt"
    if lst.is_file():
        names = [Path(line.strip()).name for line in lst.read_text().splitlines() if line.strip()]
        by_name = {p.name: p for p in files}
        absent = [nm for nm in names if nm not in by_name]
        if absent:
            raise DataMissingError(f"places365: {len(absent)} images of {lst} are not under {folder} "
                                   f"(first: {absent[0]}); extract test_256.tar "
                                   f"(http://data.csail.mit.edu/places/places365/test_256.tar, "
                                   f"{DATASETS['places365'].files[0].checksum}) into {folder}.")
        return sorted((by_name[nm] for nm in names), key=lambda p: p.relative_to(folder).as_posix())
    n = registry.PLACES365_N   # read at call time from the registry module (tests patch it there)
    if len(files) <= n:
        return files
    pick = np.sort(np.random.default_rng(registry.PLACES365_SAMPLE_SEED).choice(len(files), n, replace=False))
    return [files[i] for i in pick]


def _decode(files: list[Path], size: int, transform: str) -> np.ndarray:
    """Decode image files to uint8 (N, size, size, 3): resize_crop = shorter side to size (bilinear) + center crop;
    center_crop = center crop only; as_is = unchanged when already size x size, else resize_crop."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
        except Exception as e:
            raise ChecksumError(f"{p} cannot be decoded ({type(e).__name__}: {e}): the file is corrupt or truncated "
                                f"and the set was not loaded. Delete the folder and extract its archive "
                                "again.") from None
        if transform == "resize_crop" or (transform == "as_is" and im.size != (size, size)):
            im = TF.center_crop(TF.resize(im, size), size)
        elif transform == "center_crop":
            im = TF.center_crop(im, size)
        out[i] = np.asarray(im)
    return out


def load_image_folder(info: DatasetInfo, root: Path, split: str, image_size: int, download: bool,
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
        idx = subset_indices(info.name, len(files), n, seed)
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
            atomic_save(cache, lambda f: np.save(f, x))
        except OSError as e:
            warnings.warn(f"could not write the decoded cache {cache} ({e}); the images will be decoded again "
                          "next time", stacklevel=1)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    return ArrayDataset(info.name, images, torch.full((len(files),), -1, dtype=torch.int64))


def locate_folder(name: str, root=None, *, download: bool = False) -> Path:
    """The image folder of a registry folder set (e.g. ``inaturalist``) under ``root``: extracted from its archive
    (after its checksum) when needed, downloaded when ``download`` and a URL is known, else ``DataMissingError``."""
    info = dataset_info(name)
    if not info.folders or name == "imagenet":
        raise ValueError(f"dataset {name!r} has no single image folder; allowed: "
                         f"{', '.join(k for k, v in DATASETS.items() if v.folders and k != 'imagenet')}")
    return _locate_folder(info, data_root(root), download)


def load_folder(name: str, root=None, transform=None, *, split: str = "val", download: bool = False):
    """A ``torchvision.datasets.ImageFolder`` over a registry set's image folder (full resolution, ``transform``
    applied).

    For the ImageNet profile: ``imagenet`` (``split`` train or val: ``<root>/imagenet/<split>``), and the OOD sets
    ``inaturalist``, ``sun``, ``places``, ``imagenet-textures`` (split ignored); also accepted for the 32x32 folder
    sets. Missing folders are extracted from their archive under the root (after its checksum where one is known)
    or, with ``download=True``, downloaded; otherwise ``DataMissingError``.
    """
    import torchvision

    info = dataset_info(name)
    if not info.folders:
        raise ValueError(f"dataset {name!r} is not an image folder; allowed: "
                         f"{', '.join(k for k, v in DATASETS.items() if v.folders)} (use load() for {name!r})")
    root = data_root(root)
    if name == "imagenet":
        split = check_split(info, split)
        folder = root / "imagenet" / split
        if not folder.is_dir():
            raise DataMissingError(f"imagenet: missing {folder}; ImageNet-1k cannot be downloaded automatically: "
                                   f"get it from https://image-net.org (licence) and put (or symlink) the ImageFolder "
                                   f"layout at {folder}/<wnid>/*.JPEG (checksum unverified).")
    else:
        with data_lock(root):   # extracted (or derived) by one process at a time
            folder = _locate_folder(info, root, download)
    return torchvision.datasets.ImageFolder(str(folder), transform=transform)
