"""One training loop for every method: a method is a list of loss terms plus an optional sampler.

Per step (``train_step``)::

    x   = cat(x_id, x_out)                     # x_out: auxiliary outliers, random or picked by a sampler
    xn  = model.normalize(x)                   # requires grad iff a term penalizes input gradients (GReg)
    fmap = model.body(xn); pen = model.pool(fmap); logits = model.head(pen)
    loss = sum(term(StepOutputs(...)) for term in terms)   # each term is already weighted

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
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from ood.config import TrainConfig, uses_channels_last
from ood.data import ArrayDataset, FolderDataset, Loader, augment_batch
from ood.distributed import World, all_reduce_sum, all_true, barrier, setup, shard_slice, world
from ood.losses import StepOutputs, build_term
from ood.models import OODNet, build_model
from ood.numerics import eval_mode

__all__ = ["train", "train_step", "make_optimizer", "TrainingError", "NonFiniteLoss", "load_model", "save_atomic", "config_hash", "accuracy"]


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
    """The recipe's optimizer (``cfg.optimizer``: SGD with momentum/Nesterov, Adam or AdamW) over ``model``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_step(model: OODNet, opt: torch.optim.Optimizer, terms: list, x_id: torch.Tensor, y: torch.Tensor, *,
               epoch: int = 0, aux: ArrayDataset | None = None, out_batch_size: int = 0, sampler=None,
               generator: torch.Generator | None = None, augment: bool = True, channels_last: bool = False,
               amp: bool = False, check_finite: bool = False, id_train_size: int | None = None,
               world: World | None = None, sampler_generator: torch.Generator | None = None,
               forward=None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One optimisation step of the loss ``sum(terms)`` on the ID batch ``(x_id, y)`` (x float in [0, 1], on the
    model's device); the body of :func:`train`'s loop, also used by ``benchmarks/train_speed.py``.

    If a term needs outliers, ``out_batch_size`` of them are drawn from ``aux`` (on the same device; augmented when
    ``augment``), directly or, with a ``sampler``, picked from ``ood.sampling.pool_size`` candidates
    (``sampler.pool_factor * n_id``, or sized from ``len(aux)`` and ``id_train_size`` as the GReg code does when the
    sampler sets ``candidates_per_epoch``). Then one
    forward of ``cat(x_id, x_out)`` (``channels_last`` memory format, bf16 autocast when ``amp``), the weighted
    terms are summed, and one ``zero_grad`` / ``backward`` / ``opt.step()`` follows. All random draws come from
    ``generator``. ``epoch`` is passed to the terms (warm-ups). ``check_finite``: raise :class:`NonFiniteLoss`
    before the backward if the loss is NaN or infinite (one host sync). Returns the term values (one scalar per
    term, attached to the graph) and the logits of the whole batch (ID rows first).

    Under DDP (``world`` with more than one process, ``ood.distributed``): ``x_id`` is this process's shard,
    ``out_batch_size`` and the candidate pool are global and sliced the same way, the sampler picks this shard's
    ``out_batch_size / W`` from its slice of the pool with ``sampler_generator`` (per rank), ``forward`` is the
    DistributedDataParallel module mapping ``xn`` to ``(fmap, pen, logits)``, and the NaN check is agreed on by
    every process.
    """
    w = world or World()
    n_id = x_id.shape[0]
    needs_out = any(t.needs_outliers for t in terms)
    needs_grad = any(t.needs_input_grad for t in terms)
    if needs_out:
        if aux is None or out_batch_size <= 0:
            raise ValueError(f"terms {', '.join(t.name for t in terms)} need outliers: pass aux (an ArrayDataset) and "
                             f"out_batch_size > 0 (got aux={'None' if aux is None else aux.name!r}, "
                             f"out_batch_size={out_batch_size})")
        if sampler is not None:
            from ood.sampling import pool_size

            pool = pool_size(sampler, n_id * w.size, len(aux), id_train_size)
            cand = _draw_outliers(aux, pool, generator, augment, x_id.device, w)
            # channels_last for the candidates' no-grad forward even when the model trains in NCHW: measured 0.30 s
            # vs 0.51 s for 768 images through SmallNet on a 2-core CPU (convolutions follow the input's format)
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


def load_model(run_dir: str | Path, device="cpu") -> OODNet:
    """The trained model of a run folder (``model.pt``), in eval mode."""
    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}; run its training stage first (dvc repro) or the train notebook")
    blob = torch.load(path, map_location=device, weights_only=True)
    spec = blob["model"]
    model = build_model(spec["name"], spec["num_classes"], spec["mean"], spec["std"], **spec.get("kwargs", {}))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


def train(cfg: TrainConfig, model_spec: dict, id_train: ArrayDataset, run_dir: str | Path, *,
          aux: ArrayDataset | None = None, id_test: ArrayDataset | None = None, init_dir: str | Path | None = None,
          device="cpu", progress: bool = True, stop_after_epochs: int | None = None) -> pd.DataFrame:
    """Train ``cfg.method`` and write ``checkpoint.pt`` (each epoch), ``history.csv`` and ``model.pt`` in ``run_dir``.

    ``model_spec``: ``{"name", "num_classes", "mean", "std", "kwargs"}`` for :func:`ood.models.build_model`.
    ``init_dir``: run folder of the checkpoint to fine-tune from (required when ``cfg.init`` is set).
    ``stop_after_epochs``: stop (as if interrupted) after this many epochs of this call - for tests.
    Returns the per-epoch history (also in ``history.csv``).
    """
    if cfg.sync_batchnorm and world().distributed and torch.device(device).type != "cuda":
        raise TrainingError(f"method {cfg.method!r}: sync_batchnorm needs CUDA (torch.nn.SyncBatchNorm has no CPU "
                            "kernel); set sync_batchnorm: false to keep per-process BatchNorm statistics on the CPU")
    w, device = setup(torch.device(device))   # torchrun: join the process group; one process: unchanged
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, model_path, hist_path = run_dir / "checkpoint.pt", run_dir / "model.pt", run_dir / "history.csv"
    chash = config_hash(cfg, model_spec)

    torch.manual_seed(cfg.seed)
    model = build_model(model_spec["name"], model_spec["num_classes"], model_spec["mean"], model_spec["std"],
                        **model_spec.get("kwargs", {}))
    terms = [build_term(name, **(p or {})) for name, p in cfg.terms.items()]
    needs_out = any(t.needs_outliers for t in terms)
    if needs_out and (aux is None or cfg.out_batch_size <= 0):
        raise TrainingError(f"method {cfg.method!r} has outlier terms but no auxiliary data or out_batch_size is 0; "
                            "set the profile's benchmark.aux and the method's out_batch_size in profiles/<profile>.yaml")
    sampler = None
    if cfg.sampler:
        from ood.sampling import build_sampler

        sp = dict(cfg.sampler)
        sampler = build_sampler(sp.pop("name"), **sp)

    start_epoch, history = 0, []
    if ckpt_path.is_file():
        blob = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if blob.get("config_hash") == chash:
            model.load_state_dict(blob["state_dict"])
            start_epoch, history = blob["epoch"], blob["history"]
            print(f"resuming {cfg.method!r} from {ckpt_path} after epoch {start_epoch}/{cfg.epochs}")
        else:
            print(f"ignoring {ckpt_path}: written by another configuration; training {cfg.method!r} from the start")
            blob = None
    else:
        blob = None
    if blob is None and cfg.init:
        if init_dir is None:
            raise TrainingError(f"method {cfg.method!r} fine-tunes from {cfg.init!r}: pass init_dir (its run folder)")
        init_path = Path(init_dir) / "model.pt"
        if not init_path.is_file():
            raise TrainingError(f"method {cfg.method!r} fine-tunes from {cfg.init!r}, but {init_path} does not exist; "
                                f"train {cfg.init!r} first (dvc repro, or python -m ood train --method {cfg.init} "
                                "--run-dir DIR and then pass --init-dir DIR)")
        init = torch.load(init_path, map_location="cpu", weights_only=True)
        model.load_state_dict(init["state_dict"])
        # the input statistics are this method's (a GReg fine-tune of a CE trained with other statistics, as
        # Greg-OOD fine-tunes on CIFAR-100): the buffers come from model_spec, not from the init checkpoint
        model.mean.copy_(torch.tensor(model_spec["mean"], dtype=model.mean.dtype).view_as(model.mean))
        model.std.copy_(torch.tensor(model_spec["std"], dtype=model.std.dtype).view_as(model.std))

    if w.distributed and cfg.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    cl = uses_channels_last(cfg, device)
    if cl:
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
    steps_per_epoch = min(len(loader), cfg.steps_per_epoch or len(loader))
    amp = cfg.amp and device.type == "cuda"
    check_every = cfg.nan_check_every or (1 if device.type == "cpu" else 50)
    epochs_this_call = 0

    for epoch in range(start_epoch, cfg.epochs):
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            break
        g = _epoch_generator(cfg.seed, epoch)   # the same on every rank: permutation, crops, outlier draws
        loader.generator = g
        g_rank = torch.Generator().manual_seed((cfg.seed * 100_003 + epoch) * 1_000 + w.rank) if w.distributed else None
        model.train()
        t0 = time.time()
        sums = {t.name: torch.zeros((), device=device) for t in terms}
        correct = torch.zeros((), device=device)
        seen = 0
        bar = tqdm(loader, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False,
                   total=steps_per_epoch,
                   file=sys.stdout, mininterval=2.0)
        for step, (x_id, y) in enumerate(bar):
            if step >= steps_per_epoch:  # cfg.steps_per_epoch: the shuffled epoch is cut short
                break
            gstep = epoch * steps_per_epoch + step
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(cfg, gstep, steps_per_epoch)
            try:
                values, logits = train_step(
                    model, opt, terms, x_id, y, epoch=epoch, aux=aux, out_batch_size=cfg.out_batch_size, sampler=sampler,
                    generator=g, augment=cfg.augment, channels_last=cl, amp=amp, id_train_size=len(id_train),
                    check_finite=(step + 1) % check_every == 0 or step == steps_per_epoch - 1,
                    world=w, sampler_generator=g_rank, forward=forward)
            except NonFiniteLoss as e:
                detail = ", ".join(f"{t.name}={float(v.detach()):.4g}" for t, v in zip(terms, e.values))
                raise TrainingError(
                    f"non-finite loss in method {cfg.method!r} at epoch {epoch + 1}, step {step + 1} ({detail}); "
                    f"training stopped, the last good checkpoint (epoch {epoch}) is kept at {ckpt_path}; "
                    "lower the learning rate or the term weights in profiles/<profile>.yaml and rerun") from None
            n_id = x_id.shape[0]
            with torch.no_grad():
                for t, v in zip(terms, values):
                    sums[t.name] += v.detach().float()
                correct += (logits[:n_id].argmax(1) == y).sum()
                seen += n_id
        if w.distributed:   # the ranks' loss means averaged, their counts summed
            red = all_reduce_sum(torch.stack([*sums.values(), correct, torch.tensor(float(seen), device=device)]), w)
            sums = {k: red[i] / w.size for i, k in enumerate(sums)}
            correct, seen = red[-2], int(red[-1].item())
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
        row.update({f"loss_{k}": (v / steps_per_epoch).item() for k, v in sums.items()})
        row["train_accuracy"] = 100.0 * correct.item() / max(seen, 1)
        if id_test is not None and w.main:
            row["test_accuracy"] = accuracy(model, id_test, device)
        row["seconds"] = time.time() - t0
        history.append(row)
        if not all(math.isfinite(v) for v in row.values()):
            raise TrainingError(f"non-finite loss in method {cfg.method!r} in epoch {epoch + 1}: {row}; the last good "
                                f"checkpoint (epoch {epoch}) is kept at {ckpt_path}; lower the learning rate or the weights")
        if w.main:   # one writer; the other ranks wait until the checkpoint is complete
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_atomic({"state_dict": state, "optimizer": opt.state_dict(), "epoch": epoch + 1, "history": history,
                         "config_hash": chash, "config": asdict(cfg), "model": model_spec}, ckpt_path)
            pd.DataFrame(history).to_csv(hist_path, index=False)
        barrier(w)
        epochs_this_call += 1
        if progress and w.main:
            acc = f", test acc {row['test_accuracy']:.2f}%" if "test_accuracy" in row else ""
            print(f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}: " +
                  ", ".join(f"{k[5:]} {v:.4f}" for k, v in row.items() if k.startswith("loss_")) +
                  f", train acc {row['train_accuracy']:.2f}%{acc} ({row['seconds']:.1f} s)")

    done = len(history) >= cfg.epochs
    if done and w.main and (epochs_this_call > 0 or not model_path.is_file()):
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        meta = {"method": cfg.method, "epochs": cfg.epochs, "config": asdict(cfg)}
        if history and "test_accuracy" in history[-1]:
            meta["test_accuracy"] = history[-1]["test_accuracy"]
        save_atomic({"state_dict": state, "model": model_spec, "meta": meta}, model_path)
        pd.DataFrame(history).to_csv(hist_path, index=False)
    barrier(w)
    model.eval()
    return pd.DataFrame(history)


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
