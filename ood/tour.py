"""The tour's models (``notebooks/00_tour.ipynb``): :func:`tour_models` gives the tour its checkpoints, the
pipeline's when they exist and were trained as asked, otherwise small runs of its own (:class:`TourRun` says which);
:data:`TOUR_SCHEMA` lists the tour's parameters. The computations and figures the tour shows are in
:mod:`ood.analysis` and :mod:`ood.illustrations`.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

from ood import config
from ood.models import OODNet

__all__ = ["TOUR_SCHEMA", "TourRun", "tour_models", "tour_detector"]


#: Parameters of ``notebooks/00_tour.ipynb`` with their checks: the ``"tour"`` entry of
#: :data:`ood.config.NOTEBOOK_SCHEMAS`, which :func:`ood.config.check_notebook_params` applies.
TOUR_SCHEMA = config.NOTEBOOK_SCHEMAS["tour"]


@dataclass
class TourRun:
    """One model of the tour and where it came from."""

    method: str
    model: OODNet
    source: str             # "pipeline" or "tour"
    run_dir: Path
    terms: dict             # loss term -> every parameter it was trained with (defaults filled in)
    test_accuracy: float | None
    history: pd.DataFrame | None


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _full_terms(terms: Mapping[str, dict] | None) -> dict:
    """Loss terms with every parameter, defaults filled in (``ood.losses.build_term``)."""
    from ood.losses import build_term

    return {n: dict(build_term(n, **(p or {})).params) for n, p in (terms or {}).items()}


def _same_losses(cfg_dict: dict, cfg) -> bool:
    """Whether a stored run configuration has the loss terms and sampler of ``cfg``, after filling in each term's
    defaults (so ``{"ratio": 0.25}`` equals ``{}`` when 0.25 is the default); a term that cannot be built
    (a stored configuration from another version) counts as different."""
    def full(terms):
        try:
            return json.loads(json.dumps(_full_terms(terms), sort_keys=True))
        except ValueError:
            return None

    def norm(v):
        return json.loads(json.dumps(v, sort_keys=True))

    a = full(cfg_dict.get("terms"))
    return a is not None and a == full(cfg.terms) and norm(cfg_dict.get("sampler")) == norm(cfg.sampler)


def tour_models(params: dict, methods: Sequence[str], profile: str = "synthetic", *, run_root: str | Path = "runs/tour",
                use_pipeline_runs: bool = True, scratch_epochs: int | None = 4, finetune_steps: int | None = None,
                terms: Mapping[str, Mapping[str, dict]] | None = None,
                init: Mapping[str, str] | None = None, pipeline_only: Sequence[str] = (), device="cpu", bench=None,
                seed: int | None = None, pipeline_root: str | Path | None = None) -> dict[str, TourRun]:
    """The tour's models by method: the pipeline's checkpoint ``runs/<profile>/<method>/model.pt`` when it exists
    and was trained with the loss terms and sampler asked for, else a small run of the tour's own.

    ``terms``: per method, per loss term, parameters that override params.yaml (e.g.
    ``{"bfm": {"background": {"ratio": 0.5}}}``; a value None keeps params.yaml's); a pipeline checkpoint
    trained otherwise is not used.
    A method that fine-tunes (``init`` of params.yaml's pipeline block, or ``init[method]``) starts from the
    model this function returned for its init method - the pipeline's or the tour's - so ``methods`` must list
    the init method first. Tour runs (``ood.train.train``) go to ``run_root/<method>-<key>``, the key a hash of
    the configuration and the init checkpoint, so a rerun with the same settings reloads them and a changed
    setting trains anew. Scratch methods train ``scratch_epochs`` epochs, fine-tunes ``finetune_steps`` steps per
    epoch (None: the method's recipe in params.yaml; every other setting is the recipe's). Methods in
    ``pipeline_only`` (too slow for the tour, e.g. GReg+, whose sampler scores a pool six times the outlier
    batch at every step) are returned only when the pipeline has them, and left out otherwise. ``bench``: an
    already loaded ``ood.benchmark.Benchmark`` (default: the profile's); ``pipeline_root``: the repository whose
    ``runs/`` hold the pipeline's checkpoints (default: this one).
    """
    from ood.benchmark import load_benchmark
    from ood.models import load_model
    from ood.pipeline import paths
    from ood.train import train

    root = config.repo_root()
    run_root = Path(run_root)
    run_root = run_root if run_root.is_absolute() else root / run_root
    device = config.resolve_device(device) if isinstance(device, str) else torch.device(device)
    out: dict[str, TourRun] = {}
    for method in methods:
        spec = config.model_spec(params, profile, method)
        base = config.method_config(params, method, profile)
        init_method = (init or {}).get(method, base.init)
        new_terms = copy.deepcopy(base.terms)
        for term, over in ((terms or {}).get(method) or {}).items():
            if term not in new_terms:
                raise ValueError(f"method {method!r} has no loss term {term!r}; its terms: {', '.join(new_terms)}")
            new_terms[term] = {**(new_terms[term] or {}), **{k: v for k, v in over.items() if v is not None}}
        overrides = {"terms": new_terms, "init": init_method, "seed": seed}  # None values: the recipe's
        if init_method:
            overrides["steps_per_epoch"] = finetune_steps
        else:
            overrides["epochs"] = scratch_epochs
        cfg = config.method_config(params, method, profile, **overrides)

        pipe_dir = paths(profile, method, Path(pipeline_root) if pipeline_root else root, seed=cfg.seed)["run"]
        pipe_model = pipe_dir / "model.pt"
        if use_pipeline_runs and pipe_model.is_file():
            blob = torch.load(pipe_model, map_location="cpu", weights_only=True)
            meta = blob.get("meta", {})
            if _same_losses(meta.get("config", {}), cfg) and (not init_method or out.get(init_method, None) is None
                                                              or out[init_method].source == "pipeline"):
                out[method] = TourRun(method, load_model(pipe_dir, device), "pipeline", pipe_dir,
                                      _full_terms(cfg.terms), meta.get("test_accuracy"), None)
                continue
        if method in pipeline_only:
            continue

        if bench is None:
            bench = load_benchmark(params, profile)
        if init_method:
            if init_method not in out:
                raise ValueError(f"method {method!r} fine-tunes from {init_method!r}: list {init_method!r} before it")
            init_dir = out[init_method].run_dir
            init_digest = _file_digest(init_dir / "model.pt")
        else:
            init_dir, init_digest = None, ""
        key = hashlib.sha256(json.dumps({"cfg": asdict(cfg), "model": spec, "init": init_digest},
                                        sort_keys=True, default=str).encode()).hexdigest()[:10]
        run_dir = run_root / f"{method}-{key}"
        history = train(cfg, spec, bench.id_train, run_dir, aux=bench.aux if cfg.out_batch_size > 0 else None,
                        id_test=bench.id_test, init_dir=init_dir, device=device, progress=False)
        acc = float(history["test_accuracy"].iloc[-1]) if len(history) and "test_accuracy" in history else None
        out[method] = TourRun(method, load_model(run_dir, device), "tour", run_dir, _full_terms(cfg.terms), acc,
                              history)
    return out


def tour_detector(params: dict, run, profile: str = "synthetic", *, scorer: str = "energy", per_set: int = 4,
                  tpr: float = 0.95, seed: int = 0, bench=None, device="cpu") -> pd.DataFrame:
    """Fit a deployable detector on one of the tour's runs (``ood.detector_runs.fit_from_run``: the scorer fitted on
    ID-train, the threshold set on half the ID test set) and flag ``per_set`` images of each set with it.

    ``run``: a :class:`TourRun` or a run folder. The ID images are the first ``per_set`` of the **held** half (none
    of them set the threshold), the OOD images the first ``per_set`` of each OOD set. One row per image: ``set``
    (``"id"`` or the OOD set's name), ``image`` (its row in that set), ``truth`` (ID/OOD), ``score``, ``threshold``,
    ``decision`` (in/out), ``predicted_class``, ``probability`` and ``correct`` (the decision matches the truth).
    ``df.attrs["detector"]`` is the :class:`ood.detector.Detector` (its ``summary()`` gives the achieved rates).
    """
    from ood.data import take_rows
    from ood.detector_runs import fit_from_run

    run_dir = run.run_dir if isinstance(run, TourRun) else Path(run)
    det, bench = fit_from_run(params, run_dir, scorer, profile=profile, tpr=tpr, seed=seed, device=device,
                              bench=bench)
    held = det.calibration["held_index"][:per_set]
    picks = [("id", "ID", take_rows(bench.id_test, held), held.tolist())]
    for name, ds in bench.ood.items():
        n = min(per_set, len(ds))
        picks.append((name, "OOD", take_rows(ds, slice(0, n)), list(range(n))))
    rows = []
    for set_name, truth, ds, index in picks:
        for i, r in zip(index, det.predict(ds)):
            rows.append({"set": set_name, "image": i, "truth": truth, "score": r["score"], "threshold": r["threshold"],
                         "decision": r["decision"], "predicted_class": r["predicted_class"],
                         "probability": r["probability"], "correct": (r["decision"] == "in") == (truth == "ID")})
    df = pd.DataFrame(rows)
    df.attrs["detector"] = det
    return df
