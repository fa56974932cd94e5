"""In-memory sets and the device-side batch path: ``ArrayDataset``, ``augment_batch``, ``Loader``.

* ``Loader`` iterates over an ``ArrayDataset`` in batches, shuffled each epoch, with ``augment_batch``
  (random crop with zero padding 4 + horizontal flip, as torchvision's ``RandomCrop(32, padding=4)`` +
  ``RandomHorizontalFlip()``) applied to the whole batch on its device: no DataLoader workers, no PIL
  (the airbench recipe). A streaming set (``ood.data.folders.FolderDataset``) supplies its own batches.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F

from ood.distributed import shard_slice


def subset_indices(name: str, N: int, n: int, seed: int) -> torch.Tensor | None:
    """Sorted indices of a uniformly random ``n`` of ``N`` items (None: all of them), the subset rule of both
    datasets."""
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
        idx = subset_indices(self.name, len(self), n, seed)
        if idx is None:
            return self
        idx = idx.to(self.images.device)
        return replace(self, images=self.images[idx], labels=self.labels[idx])


def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
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
    return crop_flip(x, top, left, fl, pad)


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
        if not isinstance(self.ds, ArrayDataset):   # a streaming set (FolderDataset) reads its own batches
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


def endless(loader: "Loader") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's epochs one after another, forever."""
    while True:
        yield from loader
