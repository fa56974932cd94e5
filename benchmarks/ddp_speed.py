"""Wall time of one training run with 1 process and with N torchrun processes (DistributedDataParallel).

    python benchmarks/ddp_speed.py --profile synthetic --method ce --epochs 1 --nproc 2 --device cpu

Runs ``python -m ood train`` and ``torchrun --standalone --nproc_per_node N -m ood train`` on the same profile,
method, seed and global batch, each into a fresh temporary run folder, and prints a Markdown table: wall time
(process start to exit, so including imports, data loading and the per-process start-up), training time (the
run's own history: the summed ``seconds`` of its epochs, rank 0's under torchrun, each with its test-accuracy pass)
and the speed-up of the training time. On
the CPU each of the N processes gets ``threads // N`` threads (``OMP_NUM_THREADS``), so that the machine's cores are
split, not shared. A fine-tune needs ``--init-dir`` (the run folder of its base method).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run(nproc: int, args, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ood = ["-m", "ood", "train", "--profile", args.profile, "--method", args.method, "--device", args.device,
               "--seed", str(args.seed), "--run-dir", tmp]
        if args.epochs:
            ood += ["--epochs", str(args.epochs)]
        if args.steps_per_epoch:
            ood += ["--steps-per-epoch", str(args.steps_per_epoch)]
        if args.init_dir:
            ood += ["--init-dir", str(args.init_dir)]
        cmd = [sys.executable, *ood] if nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *ood]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // nproc)),
               "OOD_THREADS": str(max(1, threads // nproc))}
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
        hist = pd.read_csv(Path(tmp) / "timings" / f"seed{args.seed}.csv")   # ood.train.train(timings=...)
        return {"processes": nproc, "threads each": max(1, threads // nproc), "wall s": wall,
                "train s": hist["seconds"].sum(), "epochs": len(hist)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="synthetic")
    p.add_argument("--method", default="ce")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all (default: the cores)")
    p.add_argument("--init-dir", type=Path, default=None)
    args = p.parse_args(argv)
    rows = [run(1, args, args.threads), run(args.nproc, args, args.threads)]
    base = rows[0]["train s"]
    print(f"{args.profile} / {args.method}, {args.epochs} epoch(s), device {args.device}, "
          f"{args.threads} threads in all")
    print("| processes | threads each | wall (s) | training (s) | speed-up (training) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['processes']} | {r['threads each']} | {r['wall s']:.1f} | {r['train s']:.1f} | "
              f"{base / r['train s']:.2f}x |")


if __name__ == "__main__":
    main()
