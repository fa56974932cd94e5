"""Every scorer of a profile on one of the authors' published networks (``ood.checkpoints``): the baselines that
need no training (issue 39), scored as the evaluate stage scores a seed of a method.

``evaluate_checkpoint`` loads the network through the registry (the data root, the mirrors, its official URL; the
SHA-256 enforced), checks that its ID set is the profile's, and runs ``ood.evaluate.evaluate`` on the profile's sets
with the profile's scorers, fit set, batch size, protocol and average, as ``ood.run_evaluate`` does. It writes
``metrics.csv`` (``method`` = the checkpoint's name, plus ``id_accuracy``), ``scores.npz`` (``ood.artifacts``) and
``checkpoint.json`` (the entry: URL, SHA-256, where the digest is from, training, licence note) and
``reference.md`` / ``reference.csv`` (:func:`reference_table`: our numbers beside those the papers report for the
same network) into ``runs/published/<profile>/<name>/`` (git-ignored), or the folder given.

``install_checkpoint`` is the ``published`` stage of ``dvc.yaml`` (``notebooks/02_published.ipynb``): a paper
profile's pipeline (``pipelines/cifar10/``, ``pipelines/cifar100/``: their ``pipeline.published``) takes a method's
run folder from the authors' network instead of training it, so that the fine-tunes that start from it (Energy-OE,
OE and their variants, as in the Energy and OE code) start where the authors' did. Each seed's folder
``runs/<profile>/<method>/seeds/<s>/`` gets ``model.pt`` as ``ood.train`` writes it (``state_dict`` in our layout,
``model``: the method's model spec of the profile with the authors' exact normalization, ``meta``: the entry) and
``checkpoint.json``; the seeds hold the
same weights (one published network), and differ in what starts from them. No ``history.csv``: nothing was trained
here.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ood import config
from ood.artifacts import save_scores
from ood.benchmark import fit_set, load_benchmark
from ood.checkpoints import check_benchmark, checkpoint_info, load_checkpoint
from ood.data.registry import profile_mirrors
from ood.distributed import world
from ood.evaluate import EvalResult, evaluate
from ood.scorers import profile_scorers

__all__ = ["evaluate_checkpoint", "published_dir", "reference_table", "install_checkpoint", "check_install_params",
           "INSTALL_PARAMS"]


def published_dir(profile: str, name: str, root: Path | None = None) -> Path:
    """Where the evaluation of published checkpoint ``name`` on ``profile`` goes by default:
    ``<repo>/runs/published/<profile>/<name>`` (``runs/*`` is git-ignored)."""
    return (root or config.repo_root()) / "runs" / "published" / profile / name


def evaluate_checkpoint(params: dict, name: str, profile: str | None = None, *, device: str = "auto", out_dir=None,
                        scorers: list[str] | None = None, progress: bool = True, data_root=None) -> EvalResult:
    """Score the published checkpoint ``name`` with ``scorers`` (default: the profile's) on the profile's sets; see
    the module docstring. ``data_root``: where the checkpoint file is kept (default ``ood.data.fetching.DATA_ROOT``).
    Returns the ``ood.evaluate.EvalResult``; the files go to ``out_dir`` (default :func:`published_dir`)."""
    profile = profile or params["profile"]
    block = config.profile_params(params, profile)
    entry = check_benchmark(name, block["benchmark"], profile)
    names = list(scorers) if scorers else profile_scorers(block)
    ev = block["evaluate"]
    sparams = ev.get("params", {}) or {}
    dev = config.resolve_device(device)
    with profile_mirrors(block["benchmark"].get("mirrors")):
        model = load_checkpoint(name, dev, data_root)
    bench = load_benchmark(params, profile, with_aux=False)
    res = evaluate(model, id_train=fit_set(bench.id_train, ev, block["benchmark"].get("data_seed", 0)),
                   id_test=bench.id_test, ood_sets=bench.ood, scorers={n: sparams.get(n, {}) for n in names},
                   benchmark=profile, method=name, device=dev, batch_size=ev.get("batch_size", 500),
                   progress=progress, average_over=block["benchmark"].get("average_over"),
                   protocol=ev.get("protocol", "greg-detect"))
    if world().main:
        out = Path(out_dir) if out_dir is not None else published_dir(profile, name)
        out.mkdir(parents=True, exist_ok=True)
        metrics = res.metrics.copy()
        metrics["id_accuracy"] = res.id_accuracy
        metrics.to_csv(out / "metrics.csv", index=False, float_format="%.4f")
        save_scores(res.scores, out / "scores.npz")
        _write_provenance(out, entry, "published by the authors; evaluated by this project")
        ref = reference_table(metrics, params, profile, name)
        ref.to_csv(out / "reference.csv", index=False, float_format="%.2f")
        (out / "reference.md").write_text(_reference_markdown(ref, params, profile, name))
    return res


def _write_provenance(folder: Path, entry, weights: str) -> None:
    """``<folder>/checkpoint.json``: the registry entry (URL, SHA-256, where the digest is from, training, licence
    note) and what the folder's weights are (``weights``)."""
    info = {k: v for k, v in dataclasses.asdict(entry).items() if k != "file"}
    info.update(url=entry.file.url, checksum=entry.file.checksum, checksum_source=entry.file.source, weights=weights)
    (folder / "checkpoint.json").write_text(json.dumps(info, indent=1, default=list) + "\n")


def reference_table(metrics, params: dict, profile: str, name: str):
    """Our evaluation of the published network ``name`` (``metrics``: :func:`evaluate_checkpoint`'s rows) beside
    what the papers report for that same network (``ood/reference.csv``: the rows of its data set, architecture and
    method, the average over the paper's OOD sets), one row per reported (scorer, metric): ``ours`` (the average over
    the profile's ``average_over`` sets), ``paper``, ``diff = ours - paper``, the paper and its evaluation protocol
    (``ood.reference.PROTOCOLS``: where it differs from the profile's, the two numbers differ in how they were
    computed, not only in the network's run). Labelled: the weights are the authors', the evaluation ours."""
    import pandas as pd

    from ood.reference import load_reference, side_by_side

    entry = checkpoint_info(name)
    block = config.profile_params(params, profile)
    ev = block.get("evaluate") or {}
    ref = load_reference()
    ref = ref[(ref["benchmark"] == entry.dataset) & (ref["model"] == entry.arch) & (ref["train_method"] == entry.method)
              & (ref["ood_set"] == "average")]
    ours = metrics[metrics["ood_set"] == "average"].assign(benchmark=entry.dataset, method=entry.method)
    frames = []
    for (metric, paper, protocol), g in ref.groupby(["metric", "paper", "protocol"], sort=True):
        if metric not in ours.columns:
            continue
        t = side_by_side(ours, g, metric=metric, protocol=None)
        frames.append(t.assign(metric=metric, paper_name=paper, protocol=protocol))
    cols = ["weights", "evaluation", "train_method", "scorer", "metric", "ours", "paper", "diff", "paper_name",
            "protocol", "our_protocol", "source", "confidence"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    out["weights"] = f"the authors' ({name})"
    sets = block["benchmark"].get("average_over") or list(block["benchmark"]["ood"])
    out["evaluation"] = f"ours ({profile}: average over {', '.join(sets)})"
    out["our_protocol"] = ev.get("protocol", "greg-detect")
    return out[cols]


def _reference_markdown(ref, params: dict, profile: str, name: str) -> str:
    from ood.reference import to_markdown

    head = [f"# {name}: the authors' weights, our evaluation, beside the papers' numbers", "",
            f"Profile {profile}. `ours` is this project's evaluation of the published network (average over the "
            "profile's sets); `paper` is what the paper reports for the same network (its own six-set average). Where "
            "`protocol` differs from `our_protocol`, the two were computed differently (ood/reference.py, PROTOCOLS).",
            ""]
    if ref.empty:
        head.append("No paper in ood/reference.csv reports this network.")
        return "\n".join(head) + "\n"
    show = ref[["scorer", "metric", "ours", "paper", "diff", "paper_name", "protocol", "our_protocol"]]
    return "\n".join(head) + to_markdown(show) + "\n"


#: The parameters of ``notebooks/02_published.ipynb``, in order.
INSTALL_PARAMS = ("profile", "method", "checkpoint", "seeds")


def check_install_params(namespace: dict, before) -> dict:
    """The parameters of ``notebooks/02_published.ipynb`` (:data:`INSTALL_PARAMS`), checked: every name defined after
    ``before`` is one of them (a misspelled ``-p`` fails), ``profile`` is a profile, ``method`` a method of the
    catalogue, ``checkpoint`` a registry name, ``seeds`` None or a list of integers. ParamError (one line)."""
    from ood.methods import METHODS

    new = [k for k in namespace if k not in set(before) and not k.startswith("_")]
    unknown = sorted(k for k in new if k not in INSTALL_PARAMS)
    if unknown:
        raise config.ParamError(f"unknown parameter {unknown[0]!r} for notebook 'published'; allowed: "
                                f"{', '.join(INSTALL_PARAMS)}")
    values = {k: namespace.get(k) for k in INSTALL_PARAMS}
    params = config.load_params()
    if values["profile"] not in config.profiles(params):
        raise config.ParamError(f"invalid value {values['profile']!r} for parameter 'profile'; allowed: "
                                f"{', '.join(config.profiles(params))}")
    if values["method"] not in METHODS:
        raise config.ParamError(f"invalid value {values['method']!r} for parameter 'method'; allowed: "
                                f"{', '.join(METHODS)}")
    try:
        checkpoint_info(values["checkpoint"])
    except ValueError as e:
        raise config.ParamError(str(e)) from None
    if values["seeds"] is not None and not config.is_seed_list(values["seeds"]):
        raise config.ParamError(f"invalid value {values['seeds']!r} for parameter 'seeds'; allowed: None or a "
                                "non-empty list of distinct integers >= 0")
    return values


def install_checkpoint(params: dict, profile: str, method: str, name: str, *, seeds: list[int] | None = None,
                       run_dir=None, data_root=None) -> list[Path]:
    """Put the published network ``name`` where the pipeline's run of ``method`` goes (module docstring): for each
    seed (default: the pipeline's), ``<run_dir>/seeds/<s>/model.pt`` and ``checkpoint.json``; ``run_dir`` defaults to
    ``runs/<profile>/<method>``. The checkpoint must be of the profile's ID set (``check_benchmark``) and must fit the
    method's network of the profile (its architecture, classes and normalization; dropout may differ, it has no
    weights). Returns the ``model.pt`` paths."""
    from ood.pipeline import paths, seed_dir, seeds_of
    from ood.train import save_atomic

    block = config.profile_params(params, profile)
    entry = check_benchmark(name, block["benchmark"], profile)
    spec = config.model_spec(params, profile, method)
    # the authors' statistics and the profile's agree to the profile's 4 places (checked below)
    theirs = {"name": entry.arch, "num_classes": entry.num_classes, "mean": list(entry.mean), "std": list(entry.std)}
    ours = {k: spec[k] for k in theirs}
    if any(not (ours[k] == theirs[k] if k in ("name", "num_classes")
                else all(abs(a - b) < 5e-4 for a, b in zip(ours[k], theirs[k]))) for k in theirs):
        raise config.ParamError(f"published checkpoint {name!r} is {theirs}, but {method!r} of profile {profile!r} "
                                f"trains {ours}: set the profile's model block to the authors' network")
    with profile_mirrors(block["benchmark"].get("mirrors")):
        model = load_checkpoint(name, "cpu", data_root)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # the spec keeps the authors' exact statistics (the profile writes them to 4 places); a fine-tune from this run
    # takes its own normalization from the profile, as from any starting checkpoint (ood.train)
    spec = {**spec, "mean": list(entry.mean), "std": list(entry.std)}
    base = Path(run_dir) if run_dir is not None else paths(profile, method)["method_runs"]
    written = []
    for s in seeds_of(params, seeds):
        d = seed_dir(base, s)
        d.mkdir(parents=True, exist_ok=True)
        save_atomic({"state_dict": state, "model": spec,
                     "meta": {"method": method, "published": name, "sha256": entry.file.checksum}}, d / "model.pt")
        _write_provenance(d, entry, "published by the authors; not trained here")
        written.append(d / "model.pt")
    return written
