"""What the tables and figures stages read: the methods, scorers, OOD sets and seeds of a profile's pipeline, the
per-method metric, interval and figure-score files that the evaluate stage commits, and the trained models."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ood import config
from ood.aggregate import METRIC_COLUMNS
from ood.artifacts import evaluate_outputs, seed_scores
from ood.methods import METHODS
from ood.models import load_model
from ood.numerics import check_choice
from ood.pipeline import paths, seeds_of
from ood.scorers import profile_scorers
from ood.screen import load_intervals

__all__ = ["FIGURES", "StageInputs", "stage_inputs", "collect"]


#: The figures of the figures stage that show trained models, each drawing the methods params.yaml lists under
#: ``pipeline.figures.<figure>``: ``scores`` (score histograms and ROC curves), ``feature_norms`` (BFM's feature-norm
#: maps and histograms), ``grad_norms`` (GReg's input-gradient norms).
FIGURES = ("scores", "feature_norms", "grad_norms")


@dataclass
class StageInputs:
    """What the tables and figures stages read, from params.yaml and the profile, in one place."""

    profile: str
    params: dict
    methods: list[str]              # params.yaml pipeline.evaluate: every method scored
    scorers: list[str]              # the profile's evaluate.scorers (default: every registered scorer)
    ood_sets: list[str]             # the profile's benchmark.ood
    seeds: list[int]                # params.yaml seeds
    out: dict[str, Path]            # paths(profile): results/<p>, figures/<p>, ...
    figures: dict[str, list[str]]   # figure -> the methods it shows (pipeline.figures, evaluated methods only)

    @property
    def near(self) -> list[str]:
        """The profile's near-OOD sets (``benchmark.near``, OpenOOD v1.5's split; empty: no near/far split)."""
        return list(self.params["profiles"][self.profile]["benchmark"].get("near") or [])

    @property
    def far(self) -> list[str]:
        """The profile's far-OOD sets: every OOD set not in :attr:`near` (empty when there is no split)."""
        return [s for s in self.ood_sets if s not in self.near] if self.near else []

    @property
    def label(self) -> str:
        """The profile's one-line note on its benchmark (``benchmark.notes``), for the tables' captions."""
        return self.params["profiles"][self.profile]["benchmark"].get("notes", "")

    @property
    def average_over(self) -> list[str] | None:
        """The OOD sets of the ``average`` row (``benchmark.average_over``; None: every set), as the evaluate stage
        averages them."""
        return self.params["profiles"][self.profile]["benchmark"].get("average_over")

    def intervals(self) -> pd.DataFrame:
        """Every (method, seed, scorer, set)'s FPR95 with its bootstrap interval, as each method's evaluate stage
        computed them (``results/<profile>/intervals/<method>.csv``, ``ood.screen.run_intervals``), in the order of
        the methods; the seeds are those of params.yaml."""
        t = load_intervals([evaluate_outputs(self.out["results"], m)["intervals"] for m in self.methods])
        missing = sorted(set(self.seeds) - set(t["seed"]))
        if missing:
            raise ValueError(f"the bootstrap intervals under results/{self.profile}/intervals/ have no seed(s) "
                             f"{missing}: rerun the evaluate stages (dvc repro)")
        return t[t["seed"].isin(self.seeds)].reset_index(drop=True)

    def scores(self, methods: list[str], seed: int) -> dict:
        """The figure scorers' per-image scores on every set (``"<scorer>/<set>"``, ``ood.artifacts.seed_scores``) of
        one seed's run, by method, from ``results/<profile>/scores/<method>.npz``."""
        return {m: seed_scores(evaluate_outputs(self.out["results"], m)["scores"], seed) for m in methods}

    def models(self, methods: list[str], seed: int) -> dict:
        """The trained models of one seed (``ood.models.load_model``, eval mode, CPU), by method."""
        return {m: load_model(paths(self.profile, m, seed=seed)["run"]) for m in methods}


def stage_inputs(profile: str, params: dict | None = None) -> StageInputs:
    """The :class:`StageInputs` of ``profile`` (``params``: default :func:`ood.config.load_params`). A figure's list
    keeps the order of ``pipeline.figures`` and drops methods the pipeline does not evaluate; an unknown figure name,
    or a method no profile defines, raises :class:`ood.config.ParamError`."""
    params = params if params is not None else config.load_params()
    block = config.profile_params(params, profile)
    methods = list(params["pipeline"]["evaluate"])
    listed = params["pipeline"].get("figures") or {}
    unknown = sorted(set(listed) - set(FIGURES))
    if unknown:
        raise config.ParamError(f"unknown figure(s) {', '.join(unknown)} in params.yaml pipeline.figures; "
                                f"allowed: {', '.join(FIGURES)}")
    figures = {}
    for name in FIGURES:
        shown = listed.get(name) or []
        for m in shown:
            check_choice(m, f"a method of pipeline.figures.{name}", list(METHODS), error=config.ParamError)
        figures[name] = [m for m in shown if m in methods]
    return StageInputs(profile=profile, params=params, methods=methods, scorers=profile_scorers(block),
                       ood_sets=list(block["benchmark"]["ood"]), seeds=seeds_of(params), out=paths(profile),
                       figures=figures)


def collect(profile: str, methods: list[str], root: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather the per-method metric files into per-seed (metrics, accuracy) frames (``seed`` column)."""
    frames = []
    for m in methods:
        f = paths(profile, m, root)["method_metrics"]
        if not f.is_file():
            raise FileNotFoundError(f"no metrics for method {m!r} at {f}; run its evaluate stage first (dvc repro)")
        frames.append(pd.read_csv(f))
    allm = pd.concat(frames, ignore_index=True)
    if "seed" not in allm:
        raise ValueError(f"the metrics of {profile!r} under results/{profile}/runs/ have no 'seed' column: they were "
                         "written before seeds existed; rerun the evaluate stages (dvc repro)")
    for m, frame in zip(methods, frames):
        missing = [c for c in METRIC_COLUMNS if c not in frame]
        if missing:
            raise ValueError(f"{paths(profile, m, root)['method_metrics']} has no column(s) {', '.join(missing)}: it "
                             "was written before those metrics existed; rerun the evaluate stages (dvc repro)")
    acc = allm.groupby(["method", "seed"], sort=False)["id_accuracy"].first().reset_index()
    acc.insert(0, "benchmark", profile)
    cols = METRIC_COLUMNS[:2] + ["seed"] + METRIC_COLUMNS[2:]
    return allm[cols], acc
