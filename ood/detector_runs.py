"""A detector fitted on a run of a profile: the run's profile checked against its checkpoint, the scorer fitted on
the profile's ID-train fit set and calibrated on its ID test set, as the evaluate stage sees them.

This is the glue between :mod:`ood.detector` (the detector alone, which imports no pipeline code) and the pipeline
(``params.yaml`` and its profiles through :mod:`ood.config`, the data sets through :mod:`ood.benchmark`);
``python -m ood fit-detector`` and the tour call :func:`fit_from_run`. :func:`fit_from_checkpoint` does the same with
one of the authors' published networks (:mod:`ood.checkpoints`) in place of a run.
"""
from __future__ import annotations

import json
from pathlib import Path

from ood import config
from ood.benchmark import fit_set, load_benchmark
from ood.checkpoints import check_benchmark, load_checkpoint, model_spec
from ood.data.registry import profile_mirrors
from ood.detector import DetectorError, fit_detector, run_info
from ood.scorers import build_scorer

__all__ = ["check_run_profile", "fit_from_run", "fit_from_checkpoint"]


def _normal(v):
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def check_run_profile(params: dict, info: dict, profile: str | None = None) -> str:
    """The profile a run belongs to, checked: ``profile`` (``--profile``) if given, else the one its path names.
    DetectorError when the two disagree, when neither names a known profile, or when the checkpoint's model spec is
    not the one the profile builds for its method (``ood.config.model_spec``)."""
    known = config.profiles(params)
    in_path = info["profile_in_path"] if info["profile_in_path"] in known else None
    run = info["checkpoint"].parent
    if profile is not None:
        config.profile_params(params, profile)   # an unknown profile: ParamError naming the allowed ones
        if in_path is not None and in_path != profile:
            raise DetectorError(f"--run {run} is a run of profile {in_path!r} (its path), but --profile is "
                                f"{profile!r}; pass --profile {in_path} or leave --profile out")
    elif in_path is None:
        raise DetectorError(f"cannot tell the profile of {run}: its path is not runs/<profile>/<method>/seeds/<seed> "
                            f"of a known profile; pass --profile (one of {', '.join(known)})")
    profile = profile or in_path
    block = config.profile_params(params, profile)
    method = info["method"] if info["method"] in (block.get("method") or {}) else None
    expected = config.model_spec(params, profile, method)
    got = info["spec"]
    for key in ("name", "num_classes", "mean", "std", "kwargs"):
        if _normal(got.get(key, {} if key == "kwargs" else None)) != _normal(expected.get(key)):
            raise DetectorError(f"the checkpoint {info['checkpoint']} does not match profile {profile!r}: its model "
                                f"{key} is {got.get(key)!r}, the profile's{f' (method {method})' if method else ''} "
                                f"is {expected.get(key)!r}; pass the run's own profile")
    return profile


def fit_from_run(params: dict, run_dir, scorer: str = "energy", scorer_params: dict | None = None, *,
                 profile: str | None = None, tpr: float = 0.95, seed: int = 0, device="cpu",
                 batch_size: int | None = None, bench=None):
    """:func:`fit_detector` on a run folder of a profile: the scorer fits on the profile's ID-train fit set
    (``ood.benchmark.fit_set``, as the evaluate stage) and calibrates on its ID test set; the scorer's parameters
    are the profile's ``evaluate.params`` for it, overridden by ``scorer_params``. Returns ``(detector, bench)``
    (``bench``: the ``ood.benchmark.Benchmark`` loaded, or the one passed)."""
    sparams = dict(scorer_params or {})
    build_scorer(scorer, **sparams)   # unknown scorer or parameter: fail before loading anything
    info = run_info(run_dir)
    profile = check_run_profile(params, info, profile)
    block = config.profile_params(params, profile)
    ev = block["evaluate"]
    sparams = {**((ev.get("params") or {}).get(scorer) or {}), **sparams}
    if bench is None:
        bench = load_benchmark(params, profile, with_aux=False)
    det = fit_detector(Path(run_dir), scorer, sparams, fit_set(bench.id_train, ev, block["benchmark"].get(
                       "data_seed", 0)), bench.id_test, tpr=tpr, seed=seed, device=device,
                       batch_size=batch_size or ev.get("batch_size", 256), profile=profile,
                       resize=block["benchmark"].get("resize") if block["benchmark"].get("image_size", 32) != 32
                       else None)
    return det, bench


def fit_from_checkpoint(params: dict, name: str, scorer: str = "energy", scorer_params: dict | None = None, *,
                        profile: str, tpr: float = 0.95, seed: int = 0, device="cpu", batch_size: int | None = None,
                        bench=None, data_root=None):
    """:func:`fit_from_run` with the authors' published network ``name`` (``ood.checkpoints.load_checkpoint``:
    fetched and checked like data, looked up at the profile's mirrors too) in place of a run folder; ``profile`` is
    required and its ID set must be the one the network was trained on. The detector's provenance names the file's
    URL and SHA-256, and its method is ``name``. Returns ``(detector, bench)``."""
    sparams = dict(scorer_params or {})
    build_scorer(scorer, **sparams)
    block = config.profile_params(params, profile)
    entry = check_benchmark(name, block["benchmark"], profile)
    ev = block["evaluate"]
    sparams = {**((ev.get("params") or {}).get(scorer) or {}), **sparams}
    with profile_mirrors(block["benchmark"].get("mirrors")):
        model = load_checkpoint(name, device, data_root)
    if bench is None:
        bench = load_benchmark(params, profile, with_aux=False)
    det = fit_detector(model, scorer, sparams, fit_set(bench.id_train, ev, block["benchmark"].get("data_seed", 0)),
                       bench.id_test, tpr=tpr, seed=seed, device=device,
                       batch_size=batch_size or ev.get("batch_size", 256), model_spec=model_spec(name),
                       profile=profile, method=name,
                       provenance={"checkpoint": entry.file.url, "checkpoint_sha256": entry.file.checksum.split(":")[1],
                                   "weights": "published by the authors"})
    return det, bench
