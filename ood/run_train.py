"""The train and fine-tune stages: one method of a profile, once per seed (``ood.train.train``), and the histories.

A fine-tune of seed ``s`` starts from seed ``s`` of the method it fine-tunes from. A profile that says
``distributed: {nproc_per_node: N}`` trains through ``torchrun`` (:func:`launch_train`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ood import config
from ood.benchmark import load_benchmark
from ood.distributed import world
from ood.pipeline import map_seeds, paths, seed_dir, seed_workers, seeds_of
from ood.train import TrainingError, train

__all__ = ["train_method", "distributed_procs", "launch_train", "LAUNCH_OPTIONS"]


def _train_seed(*, seed: int, params: dict, method: str, profile: str, overrides: dict, base: Path, device: str,
                progress: bool, init_base: Path | None = None) -> pd.DataFrame:
    """One seed of :func:`train_method` (module level, so that a worker process can run it)."""
    cfg = config.method_config(params, method, profile, **{**overrides, "seed": seed})
    bench = load_benchmark(params, profile, with_aux=cfg.out_batch_size > 0)
    init_dir = None
    if cfg.init:
        init_dir = (seed_dir(Path(init_base), seed) if init_base is not None
                    else paths(profile, cfg.init, seed=seed)["run"])
    h = train(cfg, config.model_spec(params, profile, method), bench.id_train, seed_dir(base, seed), aux=bench.aux,
              id_test=bench.id_test, init_dir=init_dir, device=config.resolve_device(device), progress=progress,
              timings=base / "timings" / f"seed{seed}.csv")
    return h.assign(seed=seed)


def train_method(params: dict, method: str, profile: str | None = None, *, device: str = "auto", run_dir=None,
                 seeds: list[int] | None = None, progress: bool = True, init_dir=None, **overrides):
    """Train one method of a profile once per seed, as the profile says (``overrides``: TrainConfig fields, None
    ignored). Seed ``s`` runs in ``<run_dir>/seeds/<s>/`` (default run_dir: ``runs/<profile>/<method>``); a
    fine-tune of seed ``s`` starts from seed ``s`` of the method it fine-tunes from (``<init_dir>/seeds/<s>/`` when
    ``init_dir`` is given, else the pipeline's run of that method). Under torchrun every rank calls this; rank 0
    writes the files (``ood.distributed``).

    Returns (the TrainConfig of the last seed, the histories of every seed with a ``seed`` column). The pipeline's
    run (run_dir None) also publishes the histories to ``results/<profile>/history/<method>.csv``: they hold no
    wall-clock time (``ood.train.train`` writes the epochs' seconds to ``<run_dir>/timings/seed<s>.csv``), so they
    are the same bits on every machine.
    """
    profile = profile or params["profile"]
    p = paths(profile, method)
    base = Path(run_dir) if run_dir is not None else p["method_runs"]
    seeds = seeds_of(params, seeds)
    workers = seed_workers(params)
    nproc = distributed_procs(params, profile)
    if nproc > 1 and not world().distributed:   # the profile trains under torchrun: launch it, then read its files
        launch_train(params, method, profile, nproc, device=device, run_dir=base, seeds=seeds, overrides=overrides,
                     init_dir=init_dir)
        histories = [pd.read_csv(seed_dir(base, s) / "history.csv").assign(seed=s) for s in seeds]
    else:
        histories = map_seeds(_train_seed, seeds, workers, device, params=params, method=method, profile=profile,
                              overrides=overrides, base=base, device=device, progress=progress and workers == 1,
                              init_base=Path(init_dir) if init_dir is not None else None)
    cfg = config.method_config(params, method, profile, **{**overrides, "seed": seeds[-1]})
    history = pd.concat(histories, ignore_index=True)
    history = history[["seed"] + [c for c in history.columns if c != "seed"]]
    if run_dir is None and world().main:  # the pipeline's run: publish the histories beside the results
        p["history"].parent.mkdir(parents=True, exist_ok=True)
        history.to_csv(p["history"], index=False, float_format="%.6g")
    return cfg, history


def distributed_procs(params: dict, profile: str) -> int:
    """Processes per node the profile trains with (its ``distributed: {nproc_per_node: N}``; default 1)."""
    block = config.profile_params(params, profile)
    d = block.get("distributed") or {}
    if not isinstance(d, dict) or set(d) - {"nproc_per_node"}:
        raise config.ParamError(f"profile {profile!r}: 'distributed' must be a mapping with the key nproc_per_node, "
                                f"got {d!r}")
    n = d.get("nproc_per_node", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise config.ParamError(f"profile {profile!r}: invalid value {n!r} for 'distributed.nproc_per_node'; "
                                "allowed: an integer >= 1")
    return n


#: Training overrides the torchrun launch passes on (as ``python -m ood train`` options).
LAUNCH_OPTIONS = {"epochs": "--epochs", "steps_per_epoch": "--steps-per-epoch", "lr": "--lr",
                  "batch_size": "--batch-size"}


def launch_train(params: dict, method: str, profile: str, nproc: int, *, device: str, run_dir: Path,
                 seeds: list[int], overrides: dict, init_dir=None) -> None:
    """Train through ``torchrun --standalone --nproc_per_node N -m ood train ...`` (PyTorch's launcher, one node),
    one launch per seed, with the params file ``params`` was read from; raises ``TrainingError`` naming the command
    when it fails. Used by :func:`train_method` when the profile says ``distributed: {nproc_per_node: N}``."""
    import subprocess
    import sys

    bad = sorted(k for k, v in overrides.items() if v is not None and k not in LAUNCH_OPTIONS)
    if bad:
        raise config.ParamError(f"override(s) {', '.join(bad)} cannot be passed to a torchrun launch; allowed: "
                                f"{', '.join(LAUNCH_OPTIONS)}")
    for seed in seeds:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "ood", "train", "--profile", profile, "--method", method, "--device", str(device),
               "--run-dir", str(run_dir), "--seed", str(seed),
               "--params", str(params.get("_source") or config.params_path())]
        cmd += [a for k, opt in LAUNCH_OPTIONS.items() if overrides.get(k) is not None
                for a in (opt, str(overrides[k]))]
        if init_dir is not None:
            cmd += ["--init-dir", str(init_dir)]
        p = subprocess.run(cmd, cwd=config.repo_root(), capture_output=True, text=True)
        if p.returncode != 0:
            tail = ([ln for ln in p.stderr.strip().splitlines() if ln.startswith("error: ")]
                    or p.stderr.strip().splitlines()[-1:])
            raise TrainingError(f"torchrun training of {method!r} seed {seed} failed ({' '.join(cmd[1:])}): "
                                f"{tail[-1] if tail else 'exit status ' + str(p.returncode)}")
        print(p.stdout, end="")
