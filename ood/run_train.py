"""The train and fine-tune stages: one method of a profile, once per seed (``ood.train.train``), and the histories.

A fine-tune of seed ``s`` starts from seed ``s`` of the method it fine-tunes from. A profile that says
``distributed: {nproc_per_node: N}`` trains through ``torchrun`` (:func:`launch_train`).
"""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pandas as pd

from ood import config
from ood.benchmark import load_benchmark
from ood.distributed import world
from ood.pipeline import map_seeds, paths, seed_dir, seed_workers, seeds_of
from ood.train import TrainingError, train

__all__ = ["train_method", "drop_resume_state", "distributed_procs", "launch_train", "LAUNCH_OPTIONS"]

_TRAIN_FIELDS = [f.name for f in fields(config.TrainConfig)]


def _train_seed(*, seed: int, cfg: config.TrainConfig, spec: dict, params: dict, profile: str, base: Path, device: str,
                progress: bool, init_base: Path | None = None) -> pd.DataFrame:
    """One seed of :func:`train_method` (module level, so that a worker process can run it): ``cfg`` with this seed."""
    cfg = replace(cfg, seed=seed)
    bench = load_benchmark(params, profile, with_aux=cfg.out_batch_size > 0)
    init_dir = None
    if cfg.init:
        init_dir = (seed_dir(Path(init_base), seed) if init_base is not None
                    else paths(profile, cfg.init, seed=seed)["run"])
    h = train(cfg, spec, bench.id_train, seed_dir(base, seed), aux=bench.aux, id_test=bench.id_test,
              init_dir=init_dir, device=config.resolve_device(device), progress=progress,
              timings=base / "timings" / f"seed{seed}.csv")
    return h.assign(seed=seed)


def train_method(params: dict, profile: str, cfg: config.TrainConfig, *, device: str = "auto", run_dir=None,
                 seeds: list[int] | None = None, progress: bool = True, init_dir=None) -> pd.DataFrame:
    """Train ``cfg`` (one method of ``profile``, built once by :func:`ood.config.method_config` at the stage's start
    and handed down) once per seed: seed ``s`` trains ``dataclasses.replace(cfg, seed=s)`` in
    ``<run_dir>/seeds/<s>/`` (default run_dir: ``runs/<profile>/<method>``); a fine-tune of seed ``s`` starts from
    seed ``s`` of the method it fine-tunes from (``<init_dir>/seeds/<s>/`` when ``init_dir`` is given, else the
    pipeline's run of that method). ``params`` gives the data, the network and the seeds. Under torchrun every rank
    calls this; rank 0 writes the files (``ood.distributed``).

    Returns the histories of every seed with a ``seed`` column. The pipeline's run (run_dir None) also publishes them
    to ``results/<profile>/history/<method>.csv``: they hold no wall-clock time (``ood.train.train`` writes the
    epochs' seconds to ``<run_dir>/timings/seed<s>.csv``), so they are the same bits on every machine.
    """
    method = cfg.method
    p = paths(profile, method)
    base = Path(run_dir) if run_dir is not None else p["method_runs"]
    seeds = seeds_of(params, seeds)
    nproc = distributed_procs(params, profile)
    if nproc > 1 and not world().distributed:   # the profile trains under torchrun: launch it, then read its files
        launch_train(params, profile, cfg, nproc, device=device, run_dir=base, seeds=seeds, init_dir=init_dir)
        histories = [pd.read_csv(seed_dir(base, s) / "history.csv").assign(seed=s) for s in seeds]
    else:
        workers = seed_workers(params)
        spec = config.model_spec(params, profile, method)
        histories = map_seeds(_train_seed, seeds, workers, device, cfg=cfg, spec=spec, params=params,
                              profile=profile, base=base, device=device,
                              progress=progress and workers == 1,
                              init_base=Path(init_dir) if init_dir is not None else None)
    history = pd.concat(histories, ignore_index=True)
    history = history[["seed"] + [c for c in history.columns if c != "seed"]]
    if run_dir is None and world().main:  # the pipeline's run: publish the histories beside the results
        p["history"].parent.mkdir(parents=True, exist_ok=True)
        history.to_csv(p["history"], index=False, float_format="%.6g")
        for s in seeds:
            drop_resume_state(seed_dir(base, s))
    return history


def drop_resume_state(run_dir: Path) -> None:
    """Remove ``checkpoint.pt`` (the weights with the optimizer's state, written each epoch so that an interrupted
    call resumes) from a finished run folder, leaving ``model.pt`` and ``history.csv``: what a stage publishes (the
    real-data profile's run folders are committed to git, and a fine-tune reads only ``model.pt``). A folder whose
    ``model.pt`` is missing (an unfinished run) keeps it."""
    run_dir = Path(run_dir)
    if (run_dir / "model.pt").is_file():
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)


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


#: The ``python -m ood train`` options through which a torchrun launch passes a configuration's overridable fields
#: (``ood.config.OVERRIDES``).
LAUNCH_OPTIONS = {name: "--" + name.replace("_", "-") for name in config.OVERRIDES}


def launch_train(params: dict, profile: str, cfg: config.TrainConfig, nproc: int, *, device: str, run_dir: Path,
                 seeds: list[int], init_dir=None) -> None:
    """Train ``cfg`` through ``torchrun --standalone --nproc_per_node N -m ood train ...`` (PyTorch's launcher, one
    node), one launch per seed, with the params file ``params`` was read from and ``cfg``'s overridable fields as
    options; raises ``TrainingError`` naming the command when it fails, and ``ParamError`` when ``cfg`` differs from
    its profile in a field no option carries. Used by :func:`train_method` when the profile says ``distributed:
    {nproc_per_node: N}``."""
    import subprocess
    import sys

    values = {k: getattr(cfg, k) for k in LAUNCH_OPTIONS}
    resolved = config.method_config(params, cfg.method, profile, **values, seed=cfg.seed)
    bad = sorted(f for f in _TRAIN_FIELDS if getattr(resolved, f) != getattr(cfg, f))
    if bad:
        raise config.ParamError(f"field(s) {', '.join(bad)} cannot be passed to a torchrun launch; allowed: "
                                f"{', '.join(LAUNCH_OPTIONS)}")
    method = cfg.method
    for seed in seeds:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "ood", "train", "--profile", profile, "--method", method, "--device", str(device),
               "--run-dir", str(run_dir), "--seed", str(seed),
               "--params", str(params.get("_source") or config.params_path())]
        cmd += [a for k, opt in LAUNCH_OPTIONS.items() if values[k] is not None for a in (opt, str(values[k]))]
        if init_dir is not None:
            cmd += ["--init-dir", str(init_dir)]
        p = subprocess.run(cmd, cwd=config.repo_root(), capture_output=True, text=True)
        if p.returncode != 0:
            tail = ([ln for ln in p.stderr.strip().splitlines() if ln.startswith("error: ")]
                    or p.stderr.strip().splitlines()[-1:])
            raise TrainingError(f"torchrun training of {method!r} seed {seed} failed ({' '.join(cmd[1:])}): "
                                f"{tail[-1] if tail else 'exit status ' + str(p.returncode)}")
        print(p.stdout, end="")
