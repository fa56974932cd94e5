"""Training on several processes with PyTorch's own engine: ``torchrun`` starts them, DistributedDataParallel
(DDP) averages the gradients, ``torch.distributed`` reduces the logged metrics.

``torchrun --nproc_per_node N -m ood train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in every process
it starts; :func:`setup` reads them and joins the process group (NCCL on CUDA, gloo on the CPU). Without them, or
with ``WORLD_SIZE`` 1, everything here is a no-op and training is the single-process loop, bit for bit.

What a rank does (``ood.train``):

* **Data.** Every rank draws the same global random numbers (one generator seeded with ``(seed, epoch)``: the
  epoch's permutation of the ID set, the crops and flips of each global batch, the outlier indices) and keeps its
  own slice of each global batch (:func:`shard_slice`): rank ``r`` of ``W`` takes rows ``r B/W .. (r+1) B/W`` of
  the ID batch ``B`` and of the outlier batch. The shards never overlap, their union is the single-process batch,
  and a rank's images carry the same augmentation they would have in one process.
* **Losses.** Each term is a mean over the rank's rows; DDP averages the gradients over ranks, so with equal shards
  the mean of the ranks' means is the global mean. The GReg penalty is the exception: its per-row gradient carries
  the batch's ``1/n`` (the authors' ``mean``), which is ``W`` times larger on a shard, so it is divided by ``W``
  (``StepOutputs.world_size``).
* **BatchNorm.** Statistics are per rank (the per-rank batch, ``B/W`` images) unless the recipe sets
  ``sync_batchnorm: true`` (``torch.nn.SyncBatchNorm``, CUDA only in PyTorch). This is the one difference in the
  numbers between N processes and one.
* **GReg+'s sampler** scores and clusters each rank's own slice of the candidate pool and picks ``out_batch/W``
  outliers there, with a per-rank generator seeded with ``(seed, epoch, rank)``: ``W`` pools of ``pool/W`` with
  ``k/W`` clusters each instead of one pool with ``k``. Each cluster still gives its lowest- and highest-energy
  candidate, so the picks are the same kind; they are not the same images as one big pool's.
* **Checkpoints** are written by rank 0 only (atomically, as in one process), then every rank waits; a rerun of
  the same command resumes every rank from that checkpoint (after any rank was killed: torchrun stops the others).
* **Logs**: the loss terms, the training accuracy and the NaN check are reduced over the ranks.
* **Evaluation** (``ood.evaluate.evaluate`` under torchrun): each rank extracts the features (and runs the scorers
  that need the network, such as ODIN) for its contiguous share of every set (:func:`split_rows`), the shares are
  gathered in order (:func:`gather_rows`), and every rank then holds the scores one process would have (up to the
  rounding of batches of another size); rank 0 writes them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

__all__ = ["World", "world", "setup", "shard_slice", "all_reduce_sum", "all_true", "barrier", "split_rows",
           "gather_rows"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (``rank`` 0 of 1: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """The :class:`World` torchrun's environment variables describe (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    try:
        return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    except KeyError as e:
        raise RuntimeError(f"WORLD_SIZE={size} but {e.args[0]} is not set: start the processes with torchrun "
                           "(torchrun --nproc_per_node N -m ood train ...)") from None


def setup(device: torch.device, timeout_s: float = 1800) -> tuple[World, torch.device]:
    """Join the process group torchrun prepared (once per process) and return the world and this rank's device
    (``cuda:<LOCAL_RANK>`` when ``device`` is CUDA). A single process: ``(World(), device)``."""
    w = world()
    if not w.distributed:
        return w, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    if dist.get_world_size() != w.size:
        raise RuntimeError(f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE is {w.size}")
    return w, device


def shard_slice(total: int, w: World, what: str = "batch") -> slice:
    """Rows ``r * total / W .. (r + 1) * total / W`` of a global batch of ``total`` (``total`` must divide evenly)."""
    if total % w.size:
        raise ValueError(f"the {what} of {total} does not split evenly over {w.size} processes; choose a {what} "
                         f"divisible by the number of processes (torchrun --nproc_per_node)")
    n = total // w.size
    return slice(w.rank * n, (w.rank + 1) * n)


def all_reduce_sum(t: torch.Tensor, w: World) -> torch.Tensor:
    """The sum of ``t`` over the ranks (in place; ``t`` itself for one process)."""
    if w.distributed:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_true(flag: bool, w: World, device) -> bool:
    """Whether ``flag`` holds on every rank (one all-reduce; the ranks then take the same branch)."""
    if not w.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def barrier(w: World) -> None:
    if w.distributed:
        import torch.distributed as dist

        dist.barrier()


def split_rows(n: int, w: World) -> slice:
    """This rank's contiguous share of ``n`` rows: ``r n / W .. (r + 1) n / W`` (sizes differ by at most one)."""
    return slice(w.rank * n // w.size, (w.rank + 1) * n // w.size)


def gather_rows(t: torch.Tensor, n: int, w: World) -> torch.Tensor:
    """The rows of every rank's share (:func:`split_rows` of ``n``) concatenated in rank order, on every rank."""
    if not w.distributed:
        return t
    import torch.distributed as dist

    sizes = [(r + 1) * n // w.size - r * n // w.size for r in range(w.size)]
    if t.shape[0] != sizes[w.rank]:
        raise ValueError(f"rank {w.rank} holds {t.shape[0]} rows, its share of {n} is {sizes[w.rank]}")
    pad = max(sizes)
    buf = torch.zeros((pad, *t.shape[1:]), dtype=t.dtype, device=t.device)
    buf[: t.shape[0]] = t
    parts = [torch.empty_like(buf) for _ in range(w.size)]
    dist.all_gather(parts, buf)
    return torch.cat([p[:k] for p, k in zip(parts, sizes)])
