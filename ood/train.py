"""One training loop for every method: a method is a list of loss terms plus an optional sampler.

Per step (``train_step``)::

    x   = cat(x_id, x_out)                     # x_out: auxiliary outliers, random or picked by a sampler
    xn  = model.normalize(x)                   # requires grad iff a term penalizes input gradients (GReg)
    fmap = model.body(xn); pen = model.pool(fmap); logits = model.head(pen)
    loss = sum(term(StepOutputs(...)) for term in terms)   # each term is already weighted

A run (:func:`train`) reads top to bottom as named steps: :func:`prepare_training` (model, terms, sampler, the
state to start from, optimizer, loader: the set-up the command line and ``benchmarks/train_speed.py`` use too), then
per epoch :func:`run_epoch` and :func:`save_checkpoint`, then :func:`save_model`.

BatchNorm sees the ID and outlier images in one batch, as in the Outlier Exposure and Energy-OE
code. The schedule is stepped per iteration (cosine, as in the Energy-OE code's ``cosine_annealing``,
or step decay at epoch milestones).

Reproducibility and safety:

* every random draw of epoch ``e`` (shuffling, augmentation, outlier draws, k-means) comes from a
  generator seeded with ``(seed, e)``, so resuming from the checkpoint of epoch ``e - 1`` gives the
  same weights as an uninterrupted run (CPU; tested);
* a checkpoint is written atomically (temporary file + ``os.replace``) after every epoch and a rerun
  resumes from it, if it was written by the same configuration (a hash of it is stored);
* a NaN or infinite loss stops the run with a message naming the method, epoch and step; the last
  good checkpoint is kept;
* checkpoints hold only tensors and plain Python values: ``torch.load(weights_only=True)`` reads them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from ood.config import TrainConfig, uses_channels_last
from ood.data import ArrayDataset, FolderDataset, Loader, augment_batch
from ood.distributed import World, all_reduce_sum, all_true, barrier, setup, shard_slice, world
from ood.losses import StepOutputs, build_term
from ood.models import OODNet, build_from_spec
from ood.numerics import eval_mode
from ood.sampling import build_sampler, pool_size

__all__ = ["train", "Training", "prepare_training", "run_epoch", "save_checkpoint", "save_model", "train_step",
           "make_optimizer", "lr_at", "TrainingError", "NonFiniteLoss", "save_atomic", "config_hash", "accuracy"]


_RUN_SAMPLER = object()   # Training.step's default: the run's own sampler


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, an incompatible checkpoint). The message says what to do."""


class NonFiniteLoss(TrainingError):
    """Raised by :func:`train_step` (when asked to check) before the backward of a NaN or infinite loss;
    ``values`` holds the term values of that step. :func:`train` turns it into a :class:`TrainingError` naming
    the method, epoch, step and the last good checkpoint."""

    def __init__(self, values: list[torch.Tensor]):
        """Keep the term values of the failing step."""
        super().__init__("non-finite loss")
        self.values = values


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def config_hash(cfg: TrainConfig, model_spec: dict) -> str:
    blob = json.dumps({"cfg": asdict(cfg), "model": model_spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of global step ``step`` (0-based, ``epoch * steps_per_epoch + i``): ``cfg.lr`` times the
    schedule's factor. The one place it is computed: :func:`run_epoch` sets it on the optimizer before every step.

    * ``warmup_epochs`` w > 0: ``(step + 1) / (w * steps_per_epoch)`` for the first w epochs' steps;
    * ``cosine``: ``lo + (1 - lo) * (1 + cos(pi * t / T)) / 2`` with ``lo = 1e-6 / cfg.lr``, t = ``step`` (at most
      T) and T = ``epochs * steps_per_epoch``: the Energy-OE code's ``cosine_annealing`` (lr_min 1e-6), stepped per
      iteration;
    * ``step``: ``gamma ** (number of milestones <= the step's epoch)``;
    * ``constant``: 1.
    """
    return cfg.lr * _lr_factor(cfg, step, steps_per_epoch)


def _lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = cfg.warmup_epochs * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        # Energy-OE code: lr_min = 1e-6 / lr_max, cosine over all iterations.
        lo = 1e-6 / cfg.lr
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if cfg.schedule == "step":
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 1.0


@torch.no_grad()
def accuracy(model: OODNet, ds: ArrayDataset, device, batch_size: int = 500) -> float:
    """Top-1 accuracy (percent) of ``model`` on a labelled ArrayDataset."""
    correct = torch.zeros((), device=device)
    with eval_mode(model):
        for x, y in Loader(ds, batch_size, device=device):
            correct += (model(x).argmax(1) == y).sum()
    return 100.0 * correct.item() / len(ds)


def _draw_outliers(aux: ArrayDataset | FolderDataset, n: int, g: torch.Generator, augment: bool, device,
                   world: World | None = None) -> torch.Tensor:
    """``n`` random outliers (with ``world``: this process's shard of the global draw of ``n``)."""
    if isinstance(aux, FolderDataset):   # streamed from files (ImageNet auxiliary classes)
        return aux.draw(n, g, augment, device, world=world)
    idx = torch.randint(len(aux), (n,), generator=g).to(aux.images.device)
    rows = shard_slice(n, world, "outlier batch") if world is not None and world.distributed else slice(0, n)
    x = aux.images[idx[rows]]
    return (augment_batch(x, g, draw=n, start=rows.start) if augment else x).float().div_(255)


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer (``cfg.optimizer``: SGD with momentum/Nesterov, Adam or AdamW) over ``model``, built with
    ``cfg.lr``; :func:`run_epoch` sets the schedule's rate (:func:`lr_at`) before every step."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class Training:
    """One training run, set up: what :func:`prepare_training` builds and every epoch uses.

    The loop (:func:`train`), the command line (through ``ood.run_train.train_method``) and
    ``benchmarks/train_speed.py`` all set a run up with :func:`prepare_training`, so what the benchmark times is
    what a user runs. :meth:`step` is one optimisation step (:func:`train_step`) with the run's settings.
    """

    cfg: TrainConfig
    model_spec: dict
    model: OODNet
    terms: list
    sampler: object | None
    opt: torch.optim.Optimizer
    id_train: ArrayDataset
    aux: ArrayDataset | FolderDataset | None
    loader: Loader
    world: World
    device: torch.device
    channels_last: bool
    amp: bool
    steps_per_epoch: int
    forward: torch.nn.Module | None = None   # the DistributedDataParallel module under torchrun
    start_epoch: int = 0                     # epochs already done (resumed from run_dir's checkpoint)
    history: list = field(default_factory=list)
    run_dir: Path | None = None
    config_hash: str = ""

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir is not None else None

    def step(self, x_id: torch.Tensor, y: torch.Tensor, *, epoch: int, generator: torch.Generator,
             check_finite: bool = False, sampler_generator: torch.Generator | None = None, sampler=_RUN_SAMPLER):
        """:func:`train_step` on ``(x_id, y)`` with this run's model, optimizer, terms, outliers and settings
        (``sampler``: another sampler for this step, e.g. a timed wrapper of the run's)."""
        return train_step(self, x_id, y, epoch=epoch, generator=generator, check_finite=check_finite,
                          sampler_generator=sampler_generator,
                          sampler=self.sampler if sampler is _RUN_SAMPLER else sampler)


def train_step(run: Training, x_id: torch.Tensor, y: torch.Tensor, *, epoch: int, generator: torch.Generator,
               sampler=None, sampler_generator: torch.Generator | None = None,
               check_finite: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One optimisation step of the loss ``sum(run.terms)`` on the ID batch ``(x_id, y)`` (x float in [0, 1], on
    the run's device), with the run's model, optimizer, outliers and settings (:class:`Training`; call it as
    :meth:`Training.step`, which passes the run's own ``sampler``).

    If a term needs outliers, ``run.cfg.out_batch_size`` of them are drawn from ``run.aux`` (on the same device;
    augmented when ``run.cfg.augment``), directly or, with a ``sampler``, picked from ``ood.sampling.pool_size``
    candidates (``sampler.pool_factor * n_id``, or sized from ``len(run.aux)`` and ``len(run.id_train)`` as the GReg
    code does when the sampler sets ``candidates_per_epoch``). Then one forward of ``cat(x_id, x_out)``
    (``run.channels_last`` memory format, bf16 autocast when ``run.amp``), the weighted terms are summed, and one
    ``zero_grad`` / ``backward`` / ``opt.step()`` follows. All random draws come from ``generator``. ``epoch`` is
    passed to the terms (warm-ups). ``check_finite``: raise :class:`NonFiniteLoss` before the backward if the loss
    is NaN or infinite (one host sync). Returns the term values (one scalar per term, attached to the graph) and the
    logits of the whole batch (ID rows first).

    Under DDP (``run.world`` with more than one process, ``ood.distributed``): ``x_id`` is this process's shard,
    the outlier batch and the candidate pool are global and sliced the same way, the sampler picks this shard's
    ``out_batch_size / W`` from its slice of the pool with ``sampler_generator`` (per rank), ``run.forward`` is the
    DistributedDataParallel module mapping ``xn`` to ``(fmap, pen, logits)``, and the NaN check is agreed on by
    every process.
    """
    model, opt, terms, aux, w, forward = run.model, run.opt, run.terms, run.aux, run.world, run.forward
    out_batch_size, augment, channels_last, amp = run.cfg.out_batch_size, run.cfg.augment, run.channels_last, run.amp
    id_train_size = len(run.id_train)
    n_id = x_id.shape[0]
    needs_out = any(t.needs_outliers for t in terms)
    needs_grad = any(t.needs_input_grad for t in terms)
    if needs_out:
        if aux is None or out_batch_size <= 0:
            raise ValueError(f"terms {', '.join(t.name for t in terms)} need outliers: pass aux (an ArrayDataset) and "
                             f"out_batch_size > 0 (got aux={'None' if aux is None else aux.name!r}, "
                             f"out_batch_size={out_batch_size})")
        if sampler is not None:
            pool = pool_size(sampler, n_id * w.size, len(aux), id_train_size)
            cand = _draw_outliers(aux, pool, generator, augment, x_id.device, w)
            # channels_last for the candidates' no-grad forward even when the model trains in NCHW: faster on the CPU
            # (convolutions follow the input's format; the times: benchmarks/README.md)
            cand = cand.contiguous(memory_format=torch.channels_last)
            rows = shard_slice(out_batch_size, w, "outlier batch") if w.distributed else slice(0, out_batch_size)
            n_pick = rows.stop - rows.start
            with torch.autocast(cand.device.type, dtype=torch.bfloat16, enabled=amp):  # the pool forward in bf16 too
                pick = sampler.select(model, cand, n_pick, sampler_generator or generator)
            x_out = cand[pick]
        else:
            x_out = _draw_outliers(aux, out_batch_size, generator, augment, x_id.device, w)
        x = torch.cat([x_id, x_out])
    else:
        x = x_id
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        xn = model.normalize(x)
        if needs_grad:
            xn.requires_grad_(True)
        fmap, pen, logits = forward(xn) if forward is not None else _body_pool_head(model, xn)
        out = StepOutputs(model=model, xn=xn, fmap=fmap, pen=pen, logits=logits.float(), y=y, n_id=n_id, epoch=epoch,
                          world_size=w.size)
        values = [t(out) for t in terms]
    loss = torch.stack([v.float() for v in values]).sum()
    if check_finite and not all_true(bool(torch.isfinite(loss)), w, loss.device):
        raise NonFiniteLoss(values)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return values, logits


def prepare_training(cfg: TrainConfig, model_spec: dict, id_train: ArrayDataset, *,
                     aux: ArrayDataset | FolderDataset | None = None, run_dir: str | Path | None = None,
                     init_dir: str | Path | None = None, device="cpu") -> Training:
    """Set up a run of ``cfg.method``: the model (seeded with ``cfg.seed``), its loss terms and sampler, the state
    to start from (``run_dir``'s checkpoint when it was written by this configuration, else ``init_dir``'s
    ``model.pt`` for a fine-tune, else the fresh initialisation), the device and memory format, the DDP wrapper
    under torchrun, the optimizer and the ID loader. ``run_dir`` None: no checkpoint is read (a benchmark)."""
    if cfg.sync_batchnorm and world().distributed and torch.device(device).type != "cuda":
        raise TrainingError(f"method {cfg.method!r}: sync_batchnorm needs CUDA (torch.nn.SyncBatchNorm has no CPU "
                            "kernel); set sync_batchnorm: false to keep per-process BatchNorm statistics on the CPU")
    w, device = setup(torch.device(device))   # torchrun: join the process group; one process: unchanged
    run_dir = Path(run_dir) if run_dir is not None else None
    chash = config_hash(cfg, model_spec)

    torch.manual_seed(cfg.seed)
    model = build_from_spec(model_spec)
    terms = [build_term(name, **(p or {})) for name, p in cfg.terms.items()]
    if any(t.needs_outliers for t in terms) and (aux is None or cfg.out_batch_size <= 0):
        raise TrainingError(f"method {cfg.method!r} has outlier terms but no auxiliary data or out_batch_size is 0; "
                            "set the profile's benchmark.aux and the method's out_batch_size in "
                            "profiles/<profile>.yaml")
    sampler = None
    if cfg.sampler:
        sp = dict(cfg.sampler)
        sampler = build_sampler(sp.pop("name"), **sp)

    blob = _resume_state(cfg, run_dir, chash, model)
    if blob is None and cfg.init:
        _load_init(cfg, model_spec, model, init_dir)

    if w.distributed and cfg.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    channels_last = uses_channels_last(cfg, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward = None
    if w.distributed:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(_Forward(model), device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(model, cfg)
    if blob is not None:
        opt.load_state_dict(blob["optimizer"])

    id_train = id_train.to(device)
    aux = aux.to(device) if aux is not None else None
    loader = Loader(id_train, cfg.batch_size, device=device, shuffle=True, augment=cfg.augment, drop_last=True,
                    pad=cfg.crop_pad, world=w)
    if len(loader) == 0:
        raise TrainingError(f"batch_size {cfg.batch_size} is larger than the training set ({len(id_train)} images)")
    return Training(cfg=cfg, model_spec=model_spec, model=model, terms=terms, sampler=sampler, opt=opt,
                    id_train=id_train, aux=aux, loader=loader, world=w, device=device, channels_last=channels_last,
                    amp=cfg.amp and device.type == "cuda",
                    steps_per_epoch=min(len(loader), cfg.steps_per_epoch or len(loader)), forward=forward,
                    start_epoch=blob["epoch"] if blob is not None else 0,
                    history=blob["history"] if blob is not None else [], run_dir=run_dir, config_hash=chash)


def _resume_state(cfg: TrainConfig, run_dir: Path | None, chash: str, model: OODNet) -> dict | None:
    """The checkpoint of ``run_dir`` loaded into ``model`` when this configuration wrote it, else None."""
    path = run_dir / "checkpoint.pt" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("config_hash") != chash:
        print(f"ignoring {path}: written by another configuration; training {cfg.method!r} from the start")
        return None
    model.load_state_dict(blob["state_dict"])
    print(f"resuming {cfg.method!r} from {path} after epoch {blob['epoch']}/{cfg.epochs}")
    return blob


def _load_init(cfg: TrainConfig, model_spec: dict, model: OODNet, init_dir: str | Path | None) -> None:
    """Load the fine-tune's starting weights (``init_dir/model.pt``) into ``model``, keeping this method's input
    statistics: a GReg fine-tune of a CE trained with other statistics (as Greg-OOD fine-tunes on CIFAR-100) takes
    the normalization buffers from ``model_spec``, not from the init checkpoint."""
    if init_dir is None:
        raise TrainingError(f"method {cfg.method!r} fine-tunes from {cfg.init!r}: pass init_dir (its run folder)")
    init_path = Path(init_dir) / "model.pt"
    if not init_path.is_file():
        raise TrainingError(f"method {cfg.method!r} fine-tunes from {cfg.init!r}, but {init_path} does not exist; "
                            f"train {cfg.init!r} first (dvc repro, or python -m ood train --method {cfg.init} "
                            "--run-dir DIR and then pass --init-dir DIR)")
    init = torch.load(init_path, map_location="cpu", weights_only=True)
    model.load_state_dict(init["state_dict"])
    model.mean.copy_(torch.tensor(model_spec["mean"], dtype=model.mean.dtype).view_as(model.mean))
    model.std.copy_(torch.tensor(model_spec["std"], dtype=model.std.dtype).view_as(model.std))


def run_epoch(run: Training, epoch: int, *, id_test: ArrayDataset | None = None, progress: bool = True) -> dict:
    """Train one epoch of ``run`` and return its history row (``epoch``, ``lr``, ``loss_<term>`` means,
    ``train_accuracy``, ``test_accuracy`` on ``id_test`` when given): what the run computed, nothing of the machine
    (:func:`train` times the epoch). Every draw of the epoch comes from the generator of ``(seed, epoch)``; the
    learning rate is set per step from the schedule."""
    cfg, w, device, steps = run.cfg, run.world, run.device, run.steps_per_epoch
    g = _epoch_generator(cfg.seed, epoch)   # the same on every rank: permutation, crops, outlier draws
    run.loader.generator = g
    g_rank = torch.Generator().manual_seed((cfg.seed * 100_003 + epoch) * 1_000 + w.rank) if w.distributed else None
    check_every = cfg.nan_check_every or (1 if device.type == "cpu" else 50)
    run.model.train()
    sums = {t.name: torch.zeros((), device=device) for t in run.terms}
    correct = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(run.loader, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False,
               total=steps, mininterval=2.0)
    for step, (x_id, y) in enumerate(bar):
        if step >= steps:  # cfg.steps_per_epoch: the shuffled epoch is cut short
            break
        lr = lr_at(cfg, epoch * steps + step, steps)
        for group in run.opt.param_groups:
            group["lr"] = lr
        try:
            values, logits = run.step(x_id, y, epoch=epoch, generator=g, sampler_generator=g_rank,
                                      check_finite=(step + 1) % check_every == 0 or step == steps - 1)
        except NonFiniteLoss as e:
            detail = ", ".join(f"{t.name}={float(v.detach()):.4g}" for t, v in zip(run.terms, e.values))
            raise TrainingError(
                f"non-finite loss in method {cfg.method!r} at epoch {epoch + 1}, step {step + 1} ({detail}); "
                f"training stopped, the last good checkpoint (epoch {epoch}) is kept at {run.checkpoint_path}; "
                "lower the learning rate or the term weights in profiles/<profile>.yaml and rerun") from None
        n_id = x_id.shape[0]
        with torch.no_grad():
            for t, v in zip(run.terms, values):
                sums[t.name] += v.detach().float()
            correct += (logits[:n_id].argmax(1) == y).sum()
            seen += n_id
    if w.distributed:   # the ranks' loss means averaged, their counts summed
        red = all_reduce_sum(torch.stack([*sums.values(), correct, torch.tensor(float(seen), device=device)]), w)
        sums = {k: red[i] / w.size for i, k in enumerate(sums)}
        correct, seen = red[-2], int(red[-1].item())
    row = {"epoch": epoch + 1, "lr": run.opt.param_groups[0]["lr"]}
    row.update({f"loss_{k}": (v / steps).item() for k, v in sums.items()})
    row["train_accuracy"] = 100.0 * correct.item() / max(seen, 1)
    if id_test is not None and w.main:
        row["test_accuracy"] = accuracy(run.model, id_test, device)
    if not all(math.isfinite(v) for v in row.values()):
        raise TrainingError(f"non-finite loss in method {cfg.method!r} in epoch {epoch + 1}: {row}; the last good "
                            f"checkpoint (epoch {epoch}) is kept at {run.checkpoint_path}; lower the learning rate or "
                            "the weights")
    return row


def save_checkpoint(run: Training, row: dict) -> None:
    """Add ``row`` to the run's history and write ``checkpoint.pt`` (atomically) and ``history.csv``: rank 0 writes,
    the other ranks wait until it has."""
    run.history.append(row)
    if run.world.main:
        save_atomic({"state_dict": _cpu_state(run.model), "optimizer": run.opt.state_dict(), "epoch": row["epoch"],
                     "history": run.history, "config_hash": run.config_hash, "config": asdict(run.cfg),
                     "model": run.model_spec}, run.checkpoint_path)
        pd.DataFrame(run.history).to_csv(run.run_dir / "history.csv", index=False)
    barrier(run.world)


def save_model(run: Training, trained_now: bool) -> None:
    """Write ``model.pt`` (weights, model spec, configuration, last test accuracy) once every epoch is done, if this
    call trained or the file is missing; rank 0 writes."""
    model_path = run.run_dir / "model.pt"
    if len(run.history) >= run.cfg.epochs and run.world.main and (trained_now or not model_path.is_file()):
        meta = {"method": run.cfg.method, "epochs": run.cfg.epochs, "config": asdict(run.cfg)}
        if run.history and "test_accuracy" in run.history[-1]:
            meta["test_accuracy"] = run.history[-1]["test_accuracy"]
        save_atomic({"state_dict": _cpu_state(run.model), "model": run.model_spec, "meta": meta}, model_path)
        pd.DataFrame(run.history).to_csv(run.run_dir / "history.csv", index=False)
    barrier(run.world)


def _cpu_state(model: OODNet) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _print_epoch(cfg: TrainConfig, row: dict) -> None:
    acc = f", test acc {row['test_accuracy']:.2f}%" if "test_accuracy" in row else ""
    print(f"{cfg.method} epoch {row['epoch']}/{cfg.epochs}: " +
          ", ".join(f"{k[5:]} {v:.4f}" for k, v in row.items() if k.startswith("loss_")) +
          f", train acc {row['train_accuracy']:.2f}%{acc}")


def train(cfg: TrainConfig, model_spec: dict, id_train: ArrayDataset, run_dir: str | Path, *,
          aux: ArrayDataset | None = None, id_test: ArrayDataset | None = None, init_dir: str | Path | None = None,
          device="cpu", progress: bool = True, stop_after_epochs: int | None = None,
          timings: str | Path | None = None) -> pd.DataFrame:
    """Train ``cfg.method`` and write ``checkpoint.pt`` (each epoch), ``history.csv`` and ``model.pt`` in ``run_dir``.

    ``model_spec``: ``{"name", "num_classes", "mean", "std", "kwargs"}`` for :func:`ood.models.build_model`.
    ``init_dir``: run folder of the checkpoint to fine-tune from (required when ``cfg.init`` is set).
    ``stop_after_epochs``: stop (as if interrupted) after this many epochs of this call - for tests.
    ``timings``: a CSV file that gets the wall-clock seconds of every epoch this call trains (``epoch, seconds``);
    they are kept out of ``run_dir``, whose files depend on the run alone (the pipeline tracks them).
    Returns the per-epoch history (also in ``history.csv``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = prepare_training(cfg, model_spec, id_train, aux=aux, run_dir=run_dir, init_dir=init_dir, device=device)
    end = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, run.start_epoch + stop_after_epochs)
    clock = []
    for epoch in range(run.start_epoch, end):
        t0 = time.perf_counter()
        row = run_epoch(run, epoch, id_test=id_test, progress=progress)
        save_checkpoint(run, row)
        clock.append({"epoch": row["epoch"], "seconds": time.perf_counter() - t0})
        if timings is not None and run.world.main:
            _write_timings(Path(timings), clock)
        if progress and run.world.main:
            _print_epoch(cfg, row)
    save_model(run, trained_now=end > run.start_epoch)
    run.model.eval()
    return pd.DataFrame(run.history)


def _write_timings(path: Path, rows: list[dict]) -> None:
    """The epochs' wall-clock seconds of this call, as a CSV (rewritten after each epoch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, float_format="%.3f")


class _Forward(torch.nn.Module):
    """``xn -> (fmap, pen, logits)`` of a model: the part of the step DistributedDataParallel wraps (normalization
    stays outside, so that the GReg penalty differentiates w.r.t. the normalized input as in one process)."""

    def __init__(self, model: OODNet):
        super().__init__()
        self.model = model

    def forward(self, xn: torch.Tensor):
        return _body_pool_head(self.model, xn)


def _body_pool_head(model: OODNet, xn: torch.Tensor):
    """``(fmap, pen, logits)`` of the normalized input: the forward of a training step."""
    fmap = model.body(xn)
    pen = model.pool(fmap)
    return fmap, pen, model.head(pen)
