"""The evaluate stage: every scorer of the profile on each seed's trained model of one method.

Writes, as DVC outputs committed to git:

* the method's metrics, ``results/<profile>/runs/<method>.csv``: one row per seed, scorer and set;
* every seed's FPR95 with its bootstrap interval over the images, per scorer and set,
  ``results/<profile>/intervals/<method>.csv`` (``ood.screen.run_intervals``), which the tables stage gathers;
* the per-image scores of the scorers the figures draw (``ood.artifacts.FIGURE_SCORERS``) of every seed,
  ``results/<profile>/scores/<method>.npz`` (``ood.artifacts.figure_scores``), for the score histograms and ROC curves.

So no later stage reads a file that only the DVC cache holds, and a fresh clone finds a finished evaluate stage up to
date (issue 40). Every scorer's per-image scores also go to a score cache per seed,
``cache/<profile>/<method>/seed<s>.npz`` (``ood.artifacts``, ignored by git): a by-product for the reader who wants
them, not a DVC output, and no stage reads it. The suite checks its bytes (``tests/golden/synthetic-seed0.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ood import config
from ood.artifacts import evaluate_outputs, figure_scores, save_scores
from ood.benchmark import fit_set, load_benchmark
from ood.distributed import world
from ood.evaluate import evaluate
from ood.models import load_model
from ood.pipeline import map_seeds, paths, seed_dir, seed_workers, seeds_of
from ood.scorers import profile_scorers
from ood.screen import run_intervals, save_intervals

__all__ = ["evaluate_method", "SeedEvaluation"]


def _evaluate_seed(*, seed: int, params: dict, method: str, profile: str, base: Path, cache: Path, device: str,
                   scorers: list[str] | None, progress: bool):
    """One seed of :func:`evaluate_method`: scores, writes its score cache, returns its ``EvalResult``."""
    block = config.profile_params(params, profile)
    ev = block["evaluate"]
    dev = config.resolve_device(device)
    bench = load_benchmark(params, profile, with_aux=False)
    sparams = ev.get("params", {}) or {}
    res = evaluate(load_model(seed_dir(base, seed), dev),
                   id_train=fit_set(bench.id_train, ev, block["benchmark"].get("data_seed", 0)),
                   id_test=bench.id_test, ood_sets=bench.ood,
                   scorers={n: sparams.get(n, {}) for n in scorers or profile_scorers(block)}, benchmark=profile,
                   method=method,
                   device=dev, batch_size=ev.get("batch_size", 500), progress=progress,
                   average_over=block["benchmark"].get("average_over"), protocol=ev.get("protocol", "greg-detect"))
    if world().main:   # under torchrun every rank holds the gathered scores; rank 0 writes them
        save_scores(res.scores, cache / f"seed{seed}.npz")
    return res


def evaluate_method(params: dict, method: str, profile: str | None = None, *, device: str = "auto", run_dir=None,
                    seeds: list[int] | None = None, scorers: list[str] | None = None, progress: bool = True):
    """Score each seed's trained model of a method with the profile's scorers.

    Writes (module docstring) the method's metrics CSV (``seed`` column), its bootstrap intervals and its figure
    scores under ``results/<profile>/``, and one score cache per seed (``cache/<profile>/<method>/seed<s>.npz``). A
    run of another folder (``run_dir``) keeps its outputs there: ``metrics.csv``, ``intervals.csv`` (its rows named,
    and their bootstrap seeded, by the folder's name) and ``scores/seed<s>.npz``, no figure scores. Returns a
    :class:`SeedEvaluation`.
    """
    profile = profile or params["profile"]
    p = paths(profile, method)
    base = Path(run_dir) if run_dir is not None else p["method_runs"]
    cache = p["method_cache"] if run_dir is None else base / "scores"
    seeds = seeds_of(params, seeds)
    workers = seed_workers(params)
    runs = map_seeds(_evaluate_seed, seeds, workers, device, params=params, method=method, profile=profile,
                     base=base, cache=cache, device=device, scorers=scorers, progress=progress and workers == 1)
    block = config.profile_params(params, profile)
    name = method if run_dir is None else base.name
    results, frames = {}, []
    for seed, res in zip(seeds, runs):
        out = res.metrics.copy()
        out.insert(2, "seed", seed)
        out["id_accuracy"] = res.id_accuracy
        frames.append(out)
        results[seed] = res
    # the pipeline's run publishes into results/ and cache/; a run of another folder keeps its outputs there
    metrics_path = p["method_metrics"] if run_dir is None else base / "metrics.csv"
    published = evaluate_outputs(p["results"], method)
    intervals_path = published["intervals"] if run_dir is None else base / "intervals.csv"
    per_seed = pd.concat(frames, ignore_index=True)
    if world().main:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        per_seed.to_csv(metrics_path, index=False, float_format="%.4f")
        save_intervals(pd.concat([run_intervals(res.scores, name, seed, list(block["benchmark"]["ood"]),
                                                average_over=block["benchmark"].get("average_over"))
                                  for seed, res in results.items()], ignore_index=True), intervals_path)
        if run_dir is None:
            save_scores(figure_scores({s: r.scores for s, r in results.items()}), published["scores"])
    return SeedEvaluation(per_seed, results)


@dataclass
class SeedEvaluation:
    """One method's evaluation over seeds: ``metrics`` has one row per seed, scorer and set (``seed`` and
    ``id_accuracy`` columns); ``runs`` maps each seed to its ``ood.evaluate.EvalResult`` (scores included)."""

    metrics: pd.DataFrame
    runs: dict
