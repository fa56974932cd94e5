#!/usr/bin/env python
"""One command for a machine with an NVIDIA GPU: a smoke test of everything that only a GPU exercises.

    python scripts/gpu_check.py --out gpu-check                 # on the GPU, about 10 minutes (--budget-min)
    python scripts/gpu_check.py --toy --out /tmp/gpu-check      # the same steps at toy size on the CPU (CI runs it)

Steps, in order; each one is timed, and a failed step is recorded and does not stop the others:

1. ``cuda_tests``: the tests marked ``cuda`` (``pytest -m cuda``: scorers and training steps on CUDA against the CPU).
   Without CUDA they are skipped, and the step says so.
2. ``train_speed``: ``benchmarks/train_speed.py --size full --device cuda --bf16-check`` (toy: ``--size tiny --device
   cpu --methods greg``; every method's tiny run is tests/test_benchmarks.py's): our training step against the
   authors' loop, and the bf16-vs-fp32 check of the GReg penalty.
3. ``profile``: as much of the ``cifar10`` profile as fits in ``--budget-min`` minutes: its network (WRN-40-2), its
   recipes and margins, CE from scratch, then the Energy-OE and GReg fine-tunes from that CE, and every registered
   scorer. The data are what this project can carry to a GPU machine: CIFAR-10 from the ``.xz`` copies of
   ``../shared/data`` (or ``--shared DIR``), TinyImageNet-32 as the auxiliary outliers and CIFAR-100 test and
   Textures (DTD, 10 categories) as the OOD sets, found through the mirror mechanism (``--shared`` is also the
   mirror). The step counts come from a timing of CE steps on this machine: CE gets half the budget, the two
   fine-tunes a fifth each (a GReg step costs about three Energy-OE steps), evaluation the rest. Not the paper's
   numbers: the CE run is far shorter than the papers' 100 epochs, and the outliers and OOD sets are stand-ins.
   **With the authors' CE** (``--ce auto``, the default, when the Energy code's published WRN-40-2 of CIFAR-10 is
   reachable without a download: under the data root, in ``<--shared>/checkpoints/`` or a mirror; ``--ce
   published`` insists on it, ``--ce train`` never uses it): CE is not trained; its run is that network
   (``ood.run_checkpoint.install_checkpoint``, the paper pipelines' ``published`` stage), and the two fine-tunes
   share CE's half of the budget, so the GPU's minutes go to fine-tunes from the network the papers started from.

Writes into ``--out``: ``provenance.json`` (GPU name, torch and CUDA versions, commit, Python, the command),
``steps.json`` (per step: status ``ok`` / ``skipped`` / ``failed``, wall seconds, details), ``cuda_tests.txt``,
``train_speed.json`` and ``train_speed.md``, ``profile/metrics.csv`` and ``profile/accuracy.csv``, and
``summary.md``. Exit status 0 when no step failed. Needs the package's dependencies (``pip install -e '.[test]'``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The part of the budget each training run of the profile step gets (the rest: evaluation).
SHARES = {"ce": 0.5, "energy_oe": 0.2, "greg": 0.2}
#: The shares when CE is the authors' published network (nothing to train for it).
SHARES_PUBLISHED = {"ce": 0.0, "energy_oe": 0.45, "greg": 0.45}
#: The published CE of the profile's ID set (ood.checkpoints).
PUBLISHED_CE = "energy_cifar10_wrn_pretrained"
#: GReg's step against CE's: one double backward through the training forward (measured on the synthetic profile's
#: CPU runs, ood/config.py uses_channels_last: 11.3 s vs 4.0 s per 20-step fine-tune); Energy-OE: two forward halves.
STEP_COST = {"ce": 1.0, "energy_oe": 2.0, "greg": 6.0}
#: The sets at toy size: enough for two steps of batch 16 (ID and outliers) and a score on every set, no more.
TOY_SIZES = {"train": 128, "test": 64, "ood": 64, "aux": 128}


def _commit() -> str:
    if os.environ.get("OOD_COMMIT"):
        return os.environ["OOD_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git here: set OOD_COMMIT)"


def provenance(args) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name(0) if cuda else None, "cuda": torch.version.cuda if cuda else None,
            "torch": torch.__version__, "python": platform.python_version(), "commit": _commit(),
            "cpu_count": os.cpu_count(), "toy": args.toy, "budget_min": args.budget_min,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def step_cuda_tests(args, out: Path) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"status": "skipped", "why": "no CUDA device: the tests marked cuda need one"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=-ra", "-m", "cuda", "tests"],
                          cwd=ROOT, capture_output=True, text=True, timeout=args.step_timeout)
    (out / "cuda_tests.txt").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"status": "ok" if proc.returncode == 0 else "failed", "rc": proc.returncode, "summary": tail}


def step_train_speed(args, out: Path) -> dict:
    size, device = ("tiny", "cpu") if args.toy else ("full", "cuda")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--size", size, "--device", device,
           "--json", str(out / "train_speed.json"), "--bf16-check", *(["--methods", "greg"] if args.toy else [])]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.step_timeout)
    (out / "train_speed.md").write_text(proc.stdout + ("\n" + proc.stderr if proc.returncode else ""))
    return {"status": "ok" if proc.returncode == 0 else "failed", "rc": proc.returncode,
            "command": " ".join(cmd[1:]), "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def profile_params(args) -> tuple[dict, str]:
    """The ``cifar10`` profile with the data this machine has: TinyImageNet-32 outliers, CIFAR-100 and Textures (10
    categories) as OOD sets, the shared folder as mirror; toy sizes and a 2-step recipe with ``--toy``."""
    from ood import config

    params = config.load_params(ROOT / "params.yaml")
    block = copy.deepcopy(params["profiles"]["cifar10"])
    block["benchmark"].update(
        ood={"CIFAR-100 test (near-OOD)": "cifar100", "Textures (DTD, 10 categories)": "dtd10"},
        aux="tinyimagenet32", mirrors=[str(args.shared)])
    for key in ("near", "average_over"):          # the sets they name are not here
        block["benchmark"].pop(key, None)
    if args.toy:
        block["benchmark"]["sizes"] = dict(TOY_SIZES)
    name = "gpu-check"
    params["profiles"][name] = block
    params["profile"] = name
    params["seeds"] = [0]
    params["seed_workers"] = 1
    return params, name


def _timed_ce_steps(params: dict, profile: str, bench, device: str, n: int = 12) -> float:
    """Seconds per CE step of the profile's recipe on ``device`` (the median of ``n`` after 3 warm-up steps)."""
    import dataclasses

    import torch

    from ood import config
    from ood.train import _epoch_generator, prepare_training

    cfg = config.method_config(params, "ce", profile)
    cfg = dataclasses.replace(cfg, epochs=1)
    run = prepare_training(cfg, config.model_spec(params, profile, "ce"), bench.id_train, device=device)
    g = _epoch_generator(0, 0)
    run.loader.generator = g
    times = []
    for i, (x, y) in enumerate(run.loader):
        t = time.perf_counter()
        run.step(x, y, epoch=0, generator=g)
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t)
        if len(times) == n:
            break
    return sorted(times)[len(times) // 2]


def published_ce(args) -> str | None:
    """The registry name of the authors' CE when the profile step uses it (module docstring, ``--ce``): its file
    reachable without a download (the data root, ``<--shared>/checkpoints``, the mirrors; checked against its
    SHA-256). None for ``--ce train``, or for ``auto`` when it is not there. ``--ce published`` without it: the
    ``DataMissingError`` saying where to put it."""
    from ood.checkpoints import fetch_checkpoint
    from ood.data.fetching import DataMissingError

    if args.ce == "train":
        return None
    try:
        fetch_checkpoint(PUBLISHED_CE, mirrors=[str(Path(args.shared) / "checkpoints"), str(args.shared)],
                         download=False)
    except DataMissingError:
        if args.ce == "published":
            raise
        return None
    return PUBLISHED_CE


def step_profile(args, out: Path) -> dict:
    import dataclasses

    import pandas as pd

    from ood import config, run_evaluate, run_train
    from ood.benchmark import load_benchmark
    from ood.data import fetching
    from ood.run_evaluate import evaluate_method
    from ood.run_train import train_method

    fetching.SHARED_DATA = Path(args.shared)          # the .xz copies of the CIFAR files
    params, profile = profile_params(args)
    device = "cpu" if args.toy else "cuda"
    bench = load_benchmark(params, profile)
    # one process runs every training and evaluation here: they share the sets loaded once (a stage of the pipeline
    # loads its own; the sets are read-only)
    run_train.load_benchmark = run_evaluate.load_benchmark = lambda *a, **k: bench
    published = published_ce(args)
    shares = SHARES_PUBLISHED if published else SHARES
    steps, overrides = {}, {}
    if args.toy:
        overrides = {m: {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16} for m in SHARES}
        for m in ("energy_oe", "greg"):
            overrides[m]["out_batch_size"] = 16
        step_s = None
    else:
        step_s = _timed_ce_steps(params, profile, bench, device)
        budget_s = args.budget_min * 60
        for m, share in shares.items():
            if share == 0:
                continue
            cfg = config.method_config(params, m, profile)
            per_epoch = len(bench.id_train) // cfg.batch_size
            n = max(1, int(share * budget_s / (step_s * STEP_COST[m])))
            epochs = max(1, n // per_epoch)
            overrides[m] = {"epochs": epochs, "steps_per_epoch": min(per_epoch, -(-n // epochs))}
    runs = out / "profile" / "runs"
    metrics = []
    for m in SHARES:
        cfg = config.method_config(params, m, profile, **overrides.get(m, {}))
        t = time.perf_counter()
        if m == "ce" and published:   # the authors' network is CE's run: nothing is trained for it
            from ood.run_checkpoint import install_checkpoint

            install_checkpoint(params, profile, "ce", published, seeds=[0], run_dir=runs / m)
            cfg = dataclasses.replace(cfg, epochs=0, steps_per_epoch=None)
        else:
            train_method(params, profile, cfg, device=device, run_dir=runs / m, progress=False,
                         init_dir=runs / cfg.init if cfg.init else None)
        t_train = time.perf_counter() - t
        scorers = args.scorers.split(",") if args.scorers else None
        t = time.perf_counter()
        ev = evaluate_method(params, m, profile, device=device, run_dir=runs / m, scorers=scorers, progress=False)
        steps[m] = {"epochs": cfg.epochs, "steps_per_epoch": cfg.steps_per_epoch, "batch_size": cfg.batch_size,
                    "train_s": round(t_train, 1), "evaluate_s": round(time.perf_counter() - t, 1)}
        metrics.append(ev.metrics.assign(method=m))
    mdf = pd.concat(metrics, ignore_index=True)
    mdf.to_csv(out / "profile" / "metrics.csv", index=False)
    mdf[["method", "seed", "id_accuracy"]].drop_duplicates().to_csv(out / "profile" / "accuracy.csv", index=False)
    return {"status": "ok", "ce": f"published: {published}" if published else "trained here", "ce_step_s": step_s,
            "runs": steps, "scorers": sorted(mdf["scorer"].unique()),
            "ood_sets": sorted(mdf["ood_set"].unique()), "rows": len(mdf)}


STEPS = {"cuda_tests": step_cuda_tests, "train_speed": step_train_speed, "profile": step_profile}


def summary(prov: dict, results: dict) -> str:
    lines = ["# GPU check", "", f"GPU: {prov['gpu'] or 'none (CPU)'}; torch {prov['torch']}, CUDA {prov['cuda']}; "
             f"commit {prov['commit']}; started {prov['started_utc']}; toy: {prov['toy']}.", "",
             "| step | status | wall s | note |", "|---|---|---|---|"]
    for name, r in results.items():
        note = r.get("why") or r.get("summary") or r.get("error", "")[:120] or ""
        lines.append(f"| {name} | {r['status']} | {r['wall_s']:.1f} | {note} |")
    if results.get("profile", {}).get("ce"):
        lines += ["", f"CE of the profile step: {results['profile']['ce']}."]
    if results.get("profile", {}).get("runs"):
        lines += ["", "| method | epochs x steps | batch | train s | evaluate s |", "|---|---|---|---|---|"]
        for m, r in results["profile"]["runs"].items():
            lines.append(f"| {m} | {r['epochs']} x {r['steps_per_epoch']} | {r['batch_size']} | {r['train_s']} | "
                         f"{r['evaluate_s']} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="results folder (created; existing files are replaced)")
    p.add_argument("--toy", action="store_true", help="every step at toy size on the CPU (the CI rehearsal)")
    p.add_argument("--budget-min", type=float, default=8.0, help="minutes for the profile step (default 8)")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data",
                   help="the folder with the CIFAR .xz copies, tinyimagenet32-train.tar.xz and dtd10-32.tar.xz")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, from: {', '.join(STEPS)}")
    p.add_argument("--scorers", default=None, help="comma-separated scorers of the profile step (default: all; "
                   "--toy: energy,msp,knn,vim)")
    p.add_argument("--step-timeout", type=int, default=900, help="seconds a subprocess step may take")
    p.add_argument("--ce", choices=("auto", "published", "train"), default="auto",
                   help="CE of the profile step: the authors' published network when its file is here (auto), "
                        "always it (published), or trained here (train)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = [s for s in args.steps.split(",") if s]
    bad = [s for s in names if s not in STEPS]
    if bad:
        print(f"gpu_check: unknown step(s) {', '.join(bad)}; allowed: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    if args.budget_min <= 0:
        print(f"gpu_check: --budget-min must be > 0, got {args.budget_min}", file=sys.stderr)
        return 2
    if args.toy and args.scorers is None:
        args.scorers = "energy,msp,knn,vim"
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance(args)
    (args.out / "provenance.json").write_text(json.dumps(prov, indent=1) + "\n")
    results = {}
    for name in names:
        t = time.perf_counter()
        try:
            r = STEPS[name](args, args.out)
        except Exception as e:   # recorded; the other steps still run
            r = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
        r["wall_s"] = round(time.perf_counter() - t, 1)
        results[name] = r
        print(f"gpu_check: {name}: {r['status']} in {r['wall_s']} s", file=sys.stderr)
        (args.out / "steps.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (args.out / "summary.md").write_text(summary(prov, results))
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
