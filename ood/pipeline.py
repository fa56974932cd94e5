"""Where a pipeline's files live, and which seeds a stage runs (and how many at once): what every stage shares.

The stages' own glue is in one module each, so that a stage imports only the code it runs (``ood.closure``):
``ood.benchmark`` (the data stage: a profile's sets), ``ood.run_train`` (the train and fine-tune stages),
``ood.run_evaluate`` (the evaluate stage), ``ood.report`` (what the tables and figures stages read).

Paths (relative to the repository root; ``<p>`` is the profile, ``<m>`` the method):

* ``runs/<p>/<m>/``: the executed notebooks of the method's stages, and ``seeds/<s>/`` per seed ``s`` of
  params.yaml ``seeds``: ``model.pt`` (the weights and model spec, no optimizer state) and ``history.csv``; the
  per-epoch ``checkpoint.pt`` (weights and optimizer state, for resuming) is removed once a seed has finished
  (``ood.run_train.drop_resume_state``). DVC outputs: in the DVC cache (the synthetic profile and the paper
  profiles) or committed to git (``cifar10-cpu``: its ``dvc.yaml`` marks them ``cache: false``), so that a clone
  resumes that profile where its last commit stopped;
* ``cache/<p>/<m>/seed<s>.npz``: every scorer's scores on every set, per seed (DVC output, not in git);
* ``results/<p>/``: ``data.csv`` (what the data stage checked), ``runs/<m>.csv`` (one method's
  metrics, one row per seed, scorer and set), ``history/<m>.csv`` (per seed, no wall-clock column),
  ``metrics.csv`` and ``accuracy.csv`` (per seed plus mean and std rows, see ``ood.tables``), the
  ``.md``/``.tex`` tables (mean +- std over seeds), ``summary.json``;
* ``figures/<p>/``: the figures.
"""
from __future__ import annotations

from pathlib import Path

from ood import config
from ood.distributed import world
from ood.numerics import check_number

__all__ = ["paths", "seed_dir", "seeds_of", "seed_workers", "map_seeds"]


def paths(profile: str, method: str | None = None, root: Path | None = None,
          seed: int | None = None) -> dict[str, Path]:
    """Where a profile's (and a method's, and one seed's) files live; see the module docstring."""
    root = root or config.repo_root()
    p = {
        "results": root / "results" / profile,
        "figures": root / "figures" / profile,
        "runs": root / "runs" / profile,
        "cache": root / "cache" / profile,
        "data_root": config.outside_dvc_temp(root) / "data",   # a queued DVC experiment: the checkout's
    }
    if method:
        p["method_runs"] = p["runs"] / method
        p["method_metrics"] = p["results"] / "runs" / f"{method}.csv"
        p["method_cache"] = p["cache"] / method
        p["history"] = p["results"] / "history" / f"{method}.csv"
        if seed is not None:
            p["run"] = seed_dir(p["method_runs"], seed)
            p["scores"] = p["method_cache"] / f"seed{seed}.npz"
    return p


def seed_dir(run_dir: str | Path, seed: int) -> Path:
    """The folder of one seed's run inside a method's run folder: ``<run_dir>/seeds/<seed>``."""
    return Path(run_dir) / "seeds" / str(seed)


def seeds_of(params: dict, seeds: list[int] | None = None) -> list[int]:
    """The seeds to run: ``seeds`` if given, else params.yaml ``seeds`` (a non-empty list of distinct integers >= 0)."""
    seeds = params.get("seeds", [0]) if seeds is None else seeds
    if not config.is_seed_list(seeds):
        raise config.ParamError(f"invalid value {seeds!r} for 'seeds'; allowed: a non-empty list of distinct "
                                "integers >= 0")
    return seeds


def seed_workers(params: dict) -> int:
    """How many seeds a stage runs at once (the pipeline's params file, ``seed_workers``; default 1)."""
    return check_number(params.get("seed_workers", 1), "'seed_workers'", low=1, integer=True, strict=True,
                        error=config.ParamError)


def map_seeds(fn, seeds: list[int], workers: int, on_device: str, **kwargs) -> list:
    """``[fn(seed=s, **kwargs) for s in seeds]``, with up to ``workers`` seeds at once on a CPU.

    With ``workers`` > 1 (and more than one seed, on the CPU) each seed runs in its own process (``spawn``; ``fn``
    must be a module-level function of the package) with ``ood.repro.THREADS // workers`` threads, so the machine's
    cores are split between the seeds instead of shared by every operation (small convolutions scale poorly over
    threads; the measured gain on a 2-core CPU is quoted beside ``seed_workers`` in pipelines/cifar10-cpu/params.yaml).
    A seed's numbers then come from 1-thread kernels: bit-reproducible like every pinned run, but not the bits of
    ``workers: 1``.
    On CUDA (``on_device``, as ``config.resolve_device`` resolves it) the seeds run one after the other.
    """
    if (workers <= 1 or len(seeds) <= 1 or str(config.resolve_device(on_device)).startswith("cuda")
            or world().distributed):   # under torchrun every rank runs the seeds in turn, together
        return [fn(seed=s, **kwargs) for s in seeds]
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from ood import repro

    threads = max(1, repro.THREADS // workers)
    saved = os.environ.get("OOD_THREADS")
    os.environ["OOD_THREADS"] = str(threads)  # the workers pin this at `import ood` (ood/repro.py)
    try:
        with ProcessPoolExecutor(min(workers, len(seeds)), mp_context=multiprocessing.get_context("spawn")) as ex:
            futures = [ex.submit(fn, seed=s, **kwargs) for s in seeds]
            return [f.result() for f in futures]
    finally:
        if saved is None:
            os.environ.pop("OOD_THREADS", None)
        else:
            os.environ["OOD_THREADS"] = saved
