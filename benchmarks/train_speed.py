#!/usr/bin/env python
"""Training-step speed: the project's step against a loop written like the authors' code, side by side.

For each method (``ce``, ``bfm``, ``energy_oe``, ``greg``, ``greg_plus``; compositions and the outlier/ID batch
ratio from ``profiles/cifar10.yaml``) and device, two loops train the same network from the same
initialisation on the same data, and the script prints a Markdown table:

* **ours**: the run :func:`ood.train.prepare_training` sets up (what ``ood.train.train`` and ``python -m ood train``
  run), stepped by :meth:`ood.train.Training.step` and fed by its :class:`ood.data.Loader` - the ID set as uint8 on the
  device, crop + flip of the whole batch on the device (``augment_batch``), channels_last where
  ``ood.config.uses_channels_last`` says so, bf16 autocast on CUDA (as ``ood.train.train`` runs it), the gradient
  penalty by one double-backward through the training forward (``GradPenalty``), GReg+ outliers by
  :class:`ood.sampling.EnergyClusterSampler` (torch k-means on the device).
* **reference** (``authors_loop.py``; the authors' code path: ``energy_ood/CIFAR/train.py`` and
  ``Greg-OOD/train_sea.py``): a
  torchvision-style dataset decoding each image to PIL and applying ``RandomCrop(32, padding=4)``,
  ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean, std)``, a ``torch.utils.data.DataLoader`` with
  ``num_workers`` workers for the ID set and another for the outliers, fp32, NCHW, the gradient penalty through
  ``torch.autograd.functional.jacobian`` on a second forward (:func:`ood.losses.grad_penalty_reference`), and for
  GReg+ a per-step scikit-learn ``KMeans(n_init=3)`` on the CPU over the pool's normalized features with the
  authors' per-cluster picking loop (:func:`reference_cluster_select`). The other loss terms are the same objects
  as in ours, so both loops minimise the same loss.

Measured per loop (``measure.py``): ID images per second of a whole step (data loading included; warm-up steps
excluded), one CIFAR-10 epoch's time **estimated** as ``50,000 // batch`` steps at that rate (no evaluation, no
per-epoch DataLoader worker start-up), peak memory (CUDA: ``torch.cuda.max_memory_allocated``, which for ours includes
the ID and auxiliary sets held on the GPU; CPU: the peak resident set size of this process above its size at the start
of the loop, from ``/proc/self/status`` after ``malloc_trim`` and resetting the peak with ``/proc/self/clear_refs``;
DataLoader worker processes are not counted), and the ratio ours / reference of the images per second. Before the first
method on a device, both loops run one untimed step, so that one-time initialisation (kernel libraries, the allocator's
first growth) does not land on the first row. For GReg+ a second,
instrumented pass of the same number of steps times the sampling (pool forward + clustering + picking; the device
is synchronised around it) and reports its share of the step, ours against sklearn.

``--bf16-check`` compares the GReg gradient penalty (and its gradients w.r.t. the parameters) computed under
bf16 autocast with channels_last against fp32 on the same batch (:func:`bf16_check`; target relative error < 1e-2).

Usage (on a CPU shared with other processes pass ``--threads 1``: more threads than free cores make every
parallel region wait for a descheduled thread, measured 40x slower steps)::

    python benchmarks/train_speed.py --size tiny --device cpu --threads 1 --methods ce,greg,greg_plus
    python benchmarks/train_speed.py --size full --device cuda --json speed.json --bf16-check

Sizes: ``tiny`` (CPU minutes at most: SmallNet, ID batch 16, 1 warm-up + 3 timed steps, synthetic data) and
``full`` (WRN-40-2, ID batch 128, 5 warm-up + 20 timed steps; CIFAR-10 from the data root or ``../shared/data``
when present, else 50,000 synthetic images; outliers from the synthetic auxiliary set, standing in for the 300K
random images, which only changes what the pixels are, not the cost).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ood.config import TrainConfig, load_params, method_config, model_spec as config_model_spec, profile_params
from ood.data import DATA_ROOT, SHARED_DATA, ArrayDataset, DataMissingError, load
from ood.losses import GradPenalty, StepOutputs, build_term
from ood.models import MODELS, OODNet
from ood.train import prepare_training

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the sibling modules below (benchmarks/ is no package)
from authors_loop import build_net, reference_cluster_select, run_reference  # noqa: E402
from measure import LoopResult, PeakMemory, TimedSampler, forever, sampling_pass, time_loop  # noqa: E402

__all__ = ["METHODS", "main", "method_spec", "model_spec", "load_data", "run_ours", "run_reference",
           "reference_cluster_select", "bf16_check", "markdown"]

#: Methods this benchmark knows (compositions from profiles/<PROFILE>.yaml).
METHODS: tuple[str, ...] = ("ce", "bfm", "energy_oe", "greg", "greg_plus")
#: The profile whose method compositions and outlier/ID batch ratios are benchmarked.
PROFILE = "cifar10"
#: Defaults per size (each overridable on the command line).
SIZES: dict[str, dict] = {
    "tiny": {"model": "smallnet", "batch_size": 16, "warmup": 1, "steps": 3},
    "full": {"model": "wrn40_2", "batch_size": 128, "warmup": 5, "steps": 20},
}
#: Images of one CIFAR-10 training epoch (the epoch-time estimate).
EPOCH_IMAGES = 50_000
MiB = 2 ** 20


# ----------------------------------------------------------------------------------------------------------
# What is benchmarked
# ----------------------------------------------------------------------------------------------------------

@dataclass
class MethodSpec:
    """One method as both loops run it: its loss terms, sampler, batch sizes and the epoch passed to the terms."""

    name: str
    cfg: TrainConfig      # the PROFILE configuration with batch_size / out_batch_size set to the benchmark's
    n_id: int
    n_out: int            # outliers per step (0: none)
    epoch: int            # passed to the terms: past every warm-up, so each term does its full work

    @property
    def pool(self) -> int:
        """Candidates per step of the sampler (0 without one)."""
        return self.cfg.sampler.get("pool_factor", 6) * self.n_id if self.cfg.sampler else 0

    def build_terms(self):
        """Fresh loss-term objects of the method."""
        return [build_term(name, **(p or {})) for name, p in self.cfg.terms.items()]


def method_spec(params: dict, method: str, batch_size: int) -> MethodSpec:
    """The :class:`MethodSpec` of ``method`` at ID batch ``batch_size``: terms and sampler of the PROFILE block,
    outlier batch = ``batch_size`` times that block's ``out_batch_size / batch_size`` ratio."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    cfg = method_config(params, method, PROFILE)
    terms = [build_term(name, **(p or {})) for name, p in cfg.terms.items()]
    needs_out = any(t.needs_outliers for t in terms)
    n_out = int(round(batch_size * cfg.out_batch_size / cfg.batch_size)) if needs_out else 0
    if needs_out and n_out < 1:
        raise ValueError(f"method {method!r} needs outliers but its out_batch_size in the {PROFILE!r} block of "
                         f"the profile is {cfg.out_batch_size}; set it > 0")
    epoch = max([int(t.params.get("warmup_epochs", 0)) for t in terms] + [0])
    cfg = replace(cfg, batch_size=batch_size, out_batch_size=n_out)
    return MethodSpec(method, cfg, batch_size, n_out, epoch)


def model_spec(params: dict, name: str) -> dict:
    """``{"name", "num_classes", "mean", "std", "kwargs"}`` of ``name``: :func:`ood.config.model_spec` of the first
    profile (synthetic, then PROFILE) whose model block names this model, else the model's defaults with CIFAR-10
    statistics. ``params`` is the pipeline's params (``load_params``: the profiles under ``params["profiles"]``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    for profile in ("synthetic", PROFILE):
        if profile_params(params, profile)["model"]["name"] == name:
            return config_model_spec(params, profile)
    return {"name": name, "num_classes": 10, "mean": [0.4914, 0.4824, 0.4467], "std": [0.2471, 0.2435, 0.2616],
            "kwargs": {}}


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------

@dataclass
class BenchData:
    """The ID training set and the auxiliary outlier set (both uint8, on the CPU) and where they come from."""

    id_train: ArrayDataset
    aux: ArrayDataset
    description: str


def _cifar10_train(root: Path) -> ArrayDataset | None:
    """CIFAR-10's training set from ``root``; if it is not there and ``../shared/data/unpack`` is, that script
    first writes the official files (md5-checked) into ``root``. None if neither works."""
    try:
        return load("cifar10", "train", root=root)
    except DataMissingError:
        unpack = SHARED_DATA / "unpack"
        if not unpack.is_file():
            return None
    files = [line.split()[1] for line in (SHARED_DATA / "md5sums").read_text().splitlines()
             if line.strip() and line.split()[1].startswith("cifar-10-batches-py/")]
    done = subprocess.run(["bash", str(unpack), str(root), *files], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"note: {unpack} failed ({done.stderr.strip()}); using synthetic images instead", file=sys.stderr)
        return None
    try:
        return load("cifar10", "train", root=root)
    except (DataMissingError, RuntimeError, ValueError):
        return None


def load_data(size: str, batch_size: int, steps_needed: int, pool_needed: int, root: Path | None = None,
              seed: int = 0) -> BenchData:
    """Data for the benchmark.

    ``tiny``: synthetic ID images (enough for ``steps_needed`` batches, at least 256). ``full``: CIFAR-10's
    training set from ``root`` (default the data root; unpacked there from ``../shared/data`` when that holds
    it), else 50,000 synthetic ID images. Auxiliary: synthetic images, enough for ``steps_needed`` pools of
    ``pool_needed`` (so that the reference's outlier DataLoader does not start a new epoch, with new workers, inside a
    timed loop), at least 512 (tiny) or 10,000 (full).
    """
    root = Path(root) if root is not None else DATA_ROOT
    n_aux = max(512, pool_needed * steps_needed)
    if size == "full":
        id_train, where = _cifar10_train(root), f"CIFAR-10 train ({root})"
        if id_train is None:
            id_train, where = load("synthetic", "train", root=root, seed=seed, n=EPOCH_IMAGES), \
                "synthetic train, 50,000 images (no CIFAR-10 found)"
        n_aux = max(n_aux, 10_000)
    else:
        n = max(256, batch_size * steps_needed)
        id_train, where = load("synthetic", "train", root=root, seed=seed, n=n), f"synthetic train, {n} images"
    aux = load("synthetic-aux", root=root, seed=seed, n=n_aux)
    return BenchData(id_train, aux, f"ID: {where}; outliers: synthetic aux, {n_aux} images")


# ----------------------------------------------------------------------------------------------------------
# Ours (what the timing of the authors' loop, authors_loop.py, is compared with)
# ----------------------------------------------------------------------------------------------------------


def run_ours(spec: MethodSpec, mspec: dict, data: BenchData, device: torch.device, warmup: int, steps: int,
             seed: int = 0) -> LoopResult:
    """Time the project's step as users run it: the run set up by :func:`ood.train.prepare_training` (data on the
    device, channels_last per the configuration, bf16 autocast on CUDA), one :meth:`ood.train.Training.step` per
    step."""
    g = torch.Generator().manual_seed(seed)
    with PeakMemory(device) as mem:
        # from the seed's fresh initialisation (a fine-tune's starting weights do not change a step's cost)
        run = prepare_training(replace(spec.cfg, seed=seed, init=None), mspec, data.id_train, aux=data.aux,
                               device=device)
        run.model.train()
        run.loader.generator = g
        batches = forever(run.loader)
        timer = {"seconds": 0.0}
        timed = TimedSampler(run.sampler, device, timer) if run.sampler is not None else None

        def step(s=run.sampler):
            """One training step (next ID batch, outliers through sampler ``s``)."""
            x, y = next(batches)
            run.step(x, y, epoch=spec.epoch, generator=g, sampler=s)

        sec = time_loop(step, device, warmup, steps)
    res = LoopResult(sec, mem.bytes, mem.note)
    if timed is not None:
        res.sampling_seconds_per_step, res.sampling_share = sampling_pass(lambda: step(timed), timer, device, steps)
    res.notes.append(f"ours: channels_last={run.channels_last}, bf16 autocast={run.amp}")
    return res


# ----------------------------------------------------------------------------------------------------------
# bf16 check
# ----------------------------------------------------------------------------------------------------------

def bf16_check(model: OODNet, x: torch.Tensor, n_id: int | None = None) -> dict:
    """The GReg gradient penalty and its parameter gradients under bf16 autocast + channels_last against fp32.

    Both are computed on copies of ``model`` (train mode, as in training) on the same batch ``x`` (float in [0, 1],
    on the model's device; the first ``n_id`` rows are ID, default half), with margins that select every sample
    (so both precisions penalize the same samples) and the "paper" scaling. As in ``train_step``, the forward runs
    under autocast and the logits are cast to float32 before the energy. Returns the two penalties, the relative
    error of the penalty ``|p_bf16 - p_fp32| / |p_fp32|`` and of the gradients ``||g_bf16 - g_fp32|| / ||g_fp32||``
    (all parameters concatenated), and as a baseline the relative error of the gradients of plain cross-entropy on
    the ID rows of the same forward (bf16 autocast perturbs every gradient of a BatchNorm network, mostly in the
    first layers; the penalty's gradients should be no worse than that).
    """
    dev = x.device
    n_id = x.shape[0] // 2 if n_id is None else n_id
    term = GradPenalty(m_in=1e9, m_out=-1e9)
    y = torch.zeros(n_id, dtype=torch.long, device=dev)

    def run(low: bool):
        """Penalty, its parameter gradients and CE's, in bf16 + channels_last (``low``) or fp32."""
        m = copy.deepcopy(model).train()
        xx = x
        if low:
            m = m.to(memory_format=torch.channels_last)
            xx = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=low):
            xn = m.normalize(xx).requires_grad_(True)
            fmap = m.body(xn)
            pen = m.pool(fmap)
            logits = m.head(pen)
            p = term(StepOutputs(model=m, xn=xn, fmap=fmap, pen=pen, logits=logits.float(), y=y, n_id=n_id))
            ce = F.cross_entropy(logits[:n_id].float(), y)
        params = [q for q in m.parameters() if q.requires_grad]

        def flat(loss, retain):
            """Gradient of ``loss`` w.r.t. all parameters, as one float32 vector."""
            grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=retain)
            return torch.cat([(g if g is not None else torch.zeros_like(q)).float().flatten()
                              for g, q in zip(grads, params)])

        return float(p.detach()), flat(p, True), flat(ce, False)

    def rel(a, b):
        """``||a - b|| / ||b||``."""
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    p32, g32, c32 = run(False)
    p16, g16, c16 = run(True)
    return {"penalty_fp32": p32, "penalty_bf16": p16, "rel_err_penalty": abs(p16 - p32) / max(abs(p32), 1e-30),
            "rel_err_grads": rel(g16, g32), "rel_err_ce_grads": rel(c16, c32), "batch": int(x.shape[0]),
            "device": dev.type}


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------

def _fmt_mem(b: int | None, note: str) -> str:
    """MiB with one decimal, or the reason it is missing."""
    return f"{b / MiB:.1f} MiB" if b is not None else (note or "n/a")


def _fmt_time(s: float) -> str:
    """Seconds, or minutes past 10 minutes."""
    return f"{s:.1f} s" if s < 600 else f"{s / 60:.1f} min"


def result_row(device: str, spec: MethodSpec, ours: LoopResult, ref: LoopResult) -> dict:
    """One row of the report (plain values, JSON-ready)."""
    steps_per_epoch = EPOCH_IMAGES // spec.n_id
    row = {
        "device": device, "method": spec.name, "id_batch": spec.n_id, "out_batch": spec.n_out, "pool": spec.pool,
        "ours_img_s": spec.n_id / ours.seconds_per_step, "ref_img_s": spec.n_id / ref.seconds_per_step,
        "ours_epoch_s_est": steps_per_epoch * ours.seconds_per_step,
        "ref_epoch_s_est": steps_per_epoch * ref.seconds_per_step,
        "ours_peak_bytes": ours.peak_bytes, "ref_peak_bytes": ref.peak_bytes,
        "ours_peak_note": ours.peak_note, "ref_peak_note": ref.peak_note, "ref_workers": ref.workers,
        "ours_sampling_s": ours.sampling_seconds_per_step, "ours_sampling_share": ours.sampling_share,
        "ref_sampling_s": ref.sampling_seconds_per_step, "ref_sampling_share": ref.sampling_share,
        "notes": ours.notes + ref.notes,
    }
    row["ratio"] = row["ours_img_s"] / row["ref_img_s"]
    return row


def markdown(rows: list[dict], bf16: list[dict] | None = None) -> str:
    """The Markdown tables: speed per method and device, GReg+ sampling share, and the bf16 check."""
    out = []
    if rows:
        out += ["| device | method | ID + outlier batch | ours img/s | reference img/s | ratio ours/ref | "
                "ours epoch (est.) | ref epoch (est.) | ours peak mem | ref peak mem |",
                "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        batch = f"{r['id_batch']} + {r['out_batch']}" + (f" (pool {r['pool']})" if r["pool"] else "")
        out.append(f"| {r['device']} | {r['method']} | {batch} | {r['ours_img_s']:.1f} | {r['ref_img_s']:.1f} | "
                   f"{r['ratio']:.2f}x | {_fmt_time(r['ours_epoch_s_est'])} | {_fmt_time(r['ref_epoch_s_est'])} | "
                   f"{_fmt_mem(r['ours_peak_bytes'], r['ours_peak_note'])} | "
                   f"{_fmt_mem(r['ref_peak_bytes'], r['ref_peak_note'])} |")
    sampled = [r for r in rows if r["ours_sampling_s"] is not None]
    if sampled:
        out += ["", "GReg+ sampling (pool forward + clustering + picking), separate instrumented pass:", "",
                "| device | ours: torch k-means, ms/step | share of step | reference: sklearn KMeans, ms/step "
                "| share of step |", "| --- | ---: | ---: | ---: | ---: |"]
        for r in sampled:
            out.append(f"| {r['device']} | {1e3 * r['ours_sampling_s']:.1f} | {100 * r['ours_sampling_share']:.0f}% | "
                       f"{1e3 * r['ref_sampling_s']:.1f} | {100 * r['ref_sampling_share']:.0f}% |")
    if bf16:
        out += ["", "GReg penalty, bf16 autocast + channels_last vs fp32 (target: relative error < 1e-2):", "",
                "| device | model | batch | penalty fp32 | penalty bf16 | rel. error penalty | rel. error of its "
                "parameter grads | baseline: rel. error of CE grads |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for b in bf16:
            out.append(f"| {b['device']} | {b['model']} | {b['batch']} | {b['penalty_fp32']:.6g} | "
                       f"{b['penalty_bf16']:.6g} | {b['rel_err_penalty']:.2e} | {b['rel_err_grads']:.2e} | "
                       f"{b['rel_err_ce_grads']:.2e} |")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------

def _parse_methods(text: str) -> list[str]:
    """Comma-separated method names (``none``: no timing); unknown names raise ValueError listing the allowed."""
    if text.strip().lower() == "none":
        return []
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ValueError(f"unknown method {bad[0]!r}" if bad else "no method given")
    return list(dict.fromkeys(names))


def _parse_devices(text: str | None) -> list[torch.device]:
    """``cpu``, ``cuda`` or a comma list of them (default: cuda if available, else cpu); CUDA must be available."""
    names = [d.strip() for d in (text or ("cuda" if torch.cuda.is_available() else "cpu")).split(",") if d.strip()]
    bad = [d for d in names if d not in ("cpu", "cuda")]
    if bad or not names:
        raise ValueError(f"invalid device {bad[0] if bad else text!r}; allowed: cpu, cuda (or cpu,cuda)")
    if "cuda" in names and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available here; allowed: cpu")
    return [torch.device(d) for d in dict.fromkeys(names)]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu, cuda or cpu,cuda (default: cuda if available, else cpu)")
    p.add_argument("--size", default="tiny", choices=list(SIZES),
                   help="tiny (CPU, seconds) or full (WRN-40-2, batch 128)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, from: {', '.join(METHODS)} (none: only --bf16-check)")
    p.add_argument("--model", default=None, help=f"network (default: per size); one of {', '.join(sorted(MODELS))}")
    p.add_argument("--batch-size", type=int, default=None, help="ID batch (default: 16 tiny, 128 full)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 tiny, 5 full)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 tiny, 20 full)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers of the reference (default: 2 on CPU, 4 on CUDA as the authors' --prefetch)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch and of scikit-learn's KMeans in both loops (default: torch's default); "
                        "1 on a CPU shared with other processes, where more threads than free cores stall")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help=f"data root (default: {DATA_ROOT})")
    p.add_argument("--params", default=None, help="params.yaml to read (default: the repository's)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="also write the results as JSON")
    p.add_argument("--bf16-check", action="store_true",
                   help="also compare the GReg penalty under bf16 autocast + channels_last with fp32")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the Markdown report, and return it as a dict (also written to ``--json``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        methods = _parse_methods(args.methods)
        devices = _parse_devices(args.device)
    except ValueError as e:
        parser.error(f"{e}; allowed: {', '.join(METHODS)}" if "method" in str(e) else str(e))
    size = SIZES[args.size]
    model_name = args.model or size["model"]
    if model_name not in MODELS:
        parser.error(f"unknown model {model_name!r}; allowed: {', '.join(sorted(MODELS))}")
    batch = args.batch_size if args.batch_size is not None else size["batch_size"]
    warmup = args.warmup if args.warmup is not None else size["warmup"]
    steps = args.steps if args.steps is not None else size["steps"]
    for name, v, low in (("--batch-size", batch, 1), ("--warmup", warmup, 0), ("--steps", steps, 1),
                         ("--workers", args.workers if args.workers is not None else 0, 0),
                         ("--threads", args.threads if args.threads is not None else 1, 1)):
        if v < low:
            parser.error(f"invalid value {v} for {name}; allowed: an integer >= {low}")
    threads_before = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=args.threads):
            return _run(args, model_name, methods, devices, batch, warmup, steps)
    finally:
        torch.set_num_threads(threads_before)


def _run(args, model_name: str, methods: list[str], devices: list[torch.device], batch: int, warmup: int,
         steps: int) -> dict:
    """The body of :func:`main` once the arguments are checked: time every method on every device, print, return."""
    params = load_params(args.params)
    mspec = model_spec(params, model_name)
    specs = [method_spec(params, m, batch) for m in methods]
    pool = max([s.pool for s in specs] + [batch * 6])
    data = load_data(args.size, batch, 2 * (warmup + steps) + 2, pool, args.data_root, args.seed)

    report = {
        "date": datetime.date.today().isoformat(), "size": args.size, "model": model_name, "model_spec": mspec,
        "batch_size": batch, "warmup_steps": warmup, "timed_steps": steps, "data": data.description,
        "torch": torch.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "profile": PROFILE, "rows": [], "bf16_check": [],
    }
    for device in devices:
        workers = args.workers if args.workers is not None else (2 if device.type == "cpu" else 4)
        if specs:  # prime both paths once, untimed: one-time initialisation must not land on the first method
            run_ours(specs[0], mspec, data, device, 0, 1, args.seed)
            run_reference(specs[0], mspec, data, device, 0, 1, args.seed, workers)
        for spec in specs:
            ours = run_ours(spec, mspec, data, device, warmup, steps, args.seed)
            ref = run_reference(spec, mspec, data, device, warmup, steps, args.seed, workers)
            report["rows"].append(result_row(device.type, spec, ours, ref))
            gc.collect()
        if args.bf16_check:
            torch.manual_seed(args.seed)
            model = build_net(mspec).to(device)
            n = batch
            x = torch.cat([data.id_train.images[:n], data.aux.images[:n]]).to(device).float().div_(255)
            res = bf16_check(model, x, n_id=n)
            res["model"] = model_name
            report["bf16_check"].append(res)

    print(f"# Training-step speed, {args.size} size ({report['date']}; {report['machine']}; torch {report['torch']})")
    print(f"\nModel {model_name}; ID batch {batch}; {warmup} warm-up + {steps} timed steps per loop; "
          f"{data.description}. Method compositions and outlier/ID ratios: profiles/{PROFILE}.yaml. "
          f"Epoch times are estimates: {EPOCH_IMAGES:,} // {batch} steps at the measured step time.\n")
    print(markdown(report["rows"], report["bf16_check"]))
    notes = sorted({n for r in report["rows"] for n in r["notes"]})
    workers_used = sorted({r["ref_workers"] for r in report["rows"] if r["ref_workers"] is not None})
    if workers_used:
        notes.append(f"reference: DataLoader num_workers={', '.join(map(str, workers_used))}; CPU peak memory of the "
                     "reference excludes its worker processes")
    if notes:
        print("\nNotes: " + "; ".join(notes) + ".")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
