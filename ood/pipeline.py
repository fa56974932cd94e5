"""The glue the notebooks call: params.yaml -> data, model, training run, evaluation, tables.

Paths (relative to the repository root; ``<p>`` is the profile, ``<m>`` the method):

* ``runs/<p>/<m>/``: ``checkpoint.pt`` (each epoch), ``model.pt``, ``history.csv``, the executed
  notebooks of the run (DVC outputs, not in git);
* ``cache/<p>/<m>/scores.npz``: every scorer's scores on every set (DVC output, not in git);
* ``results/<p>/``: ``data.csv`` (what the data stage checked), ``runs/<m>.csv`` (one method's
  metrics), ``metrics.csv``, ``accuracy.csv``, the ``.md``/``.tex`` tables, ``summary.json``;
* ``figures/<p>/``: the figures.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ood import config as C
from ood.data import ArrayDataset, load
from ood.data import describe as describe_dataset

__all__ = ["describe_dataset", "collect", "Benchmark", "load_benchmark", "model_spec", "paths", "train_method", "evaluate_method", "data_manifest"]


def paths(profile: str, method: str | None = None, root: Path | None = None) -> dict[str, Path]:
    root = root or C.repo_root()
    p = {
        "results": root / "results" / profile,
        "figures": root / "figures" / profile,
        "runs": root / "runs" / profile,
        "cache": root / "cache" / profile,
        "data_root": root / "data",
    }
    if method:
        p["run"] = p["runs"] / method
        p["method_metrics"] = p["results"] / "runs" / f"{method}.csv"
        p["scores"] = p["cache"] / method / "scores.npz"
        p["history"] = p["results"] / "history" / f"{method}.csv"
    return p


@dataclass
class Benchmark:
    name: str
    id_train: ArrayDataset
    id_test: ArrayDataset
    ood: dict[str, ArrayDataset]       # display name -> dataset
    aux: ArrayDataset | None
    num_classes: int
    notes: str = ""


def load_benchmark(params: dict, profile: str | None = None, *, with_aux: bool = True, data_root: Path | None = None) -> Benchmark:
    """Load (generating or reading from the data root) every set of a profile's benchmark block."""
    profile = profile or params["profile"]
    b = C.profile_params(params, profile)["benchmark"]
    root = data_root or paths(profile)["data_root"]
    seed = b.get("data_seed", 0)
    sizes = b.get("sizes", {}) or {}
    if b.get("image_size", 32) != 32:
        return _folder_benchmark(b, profile, Path(root), with_aux=with_aux)

    def get(name, split, size_key):
        return load(name, split, root, seed=seed, n=sizes.get(size_key))

    ood = b["ood"]
    if isinstance(ood, list):
        ood = {n: n for n in ood}
    return Benchmark(
        name=profile,
        id_train=get(b["id"], "train", "train"),
        id_test=get(b["id"], "test", "test"),
        ood={disp: get(name, "test", "ood") for disp, name in ood.items()},
        aux=get(b["aux"], "train", "aux") if with_aux and b.get("aux") else None,
        num_classes=b["num_classes"],
        notes=b.get("notes", ""),
    )


#: Auxiliary outliers of the ImageNet profile: Greg-OOD's ``imagenetAuxClassAndIndex.pth``, the ImageNet-1k training
#: classes k (sorted wnid order) with 100 <= perm[k] < 200, perm = numpy.random.RandomState(1993).permutation(1000)
#: (ood/imagenet_subsets.yaml states the rule and its check against the authors' files) [code: Greg-OOD].
IMAGENET_AUX_RULE = {"seed": 1993, "low": 100, "high": 200}


def imagenet_aux_classes(train_folder: Path) -> list[str]:
    """The wnids of GReg's ImageNet auxiliary-outlier classes, from the 1,000 class folders of ``train_folder``."""
    import numpy as np

    wnids = sorted(d.name for d in Path(train_folder).iterdir() if d.is_dir())
    if len(wnids) != 1000:
        raise C.ParamError(f"imagenet-aux100 needs the 1,000 ImageNet-1k class folders under {train_folder} (the rule "
                           f"permutes all of them), found {len(wnids)}; set the profile's benchmark.aux to null to "
                           "train without outliers")
    perm = np.random.RandomState(IMAGENET_AUX_RULE["seed"]).permutation(1000)
    return [w for w, p in zip(wnids, perm) if IMAGENET_AUX_RULE["low"] <= p < IMAGENET_AUX_RULE["high"]]


def _folder_benchmark(b: dict, profile: str, root: Path, *, with_aux: bool) -> Benchmark:
    """A full-resolution benchmark (the ImageNet profile) of FolderDatasets, streamed from ``root``.

    ID: ``<root>/imagenet/{train,val}/<wnid>/`` restricted to ``benchmark.subset`` (a GReg class subset of
    ood/imagenet_subsets.yaml, labels in its order; null: all 1,000 classes). OOD: the registry's image folders
    (load_folder's checks and messages). Auxiliary: ``imagenet-aux100`` (IMAGENET_AUX_RULE) or null.
    """
    from ood.data import DataMissingError, folder_dataset, load_folder, locate_folder
    from ood.reference import load_imagenet_subset

    if b["id"] != "imagenet":
        raise C.ParamError(f"profile {profile!r}: image_size {b['image_size']} needs benchmark.id imagenet (the only "
                           f"full-resolution ID set), got {b['id']!r}")
    kw = {"image_size": b["image_size"], "resize": b.get("resize", 256), "workers": b.get("workers", 4)}
    base = root / "imagenet"
    for split in ("train", "val"):
        if not (base / split).is_dir():
            load_folder("imagenet", root, split=split)   # raises the DataMissingError with where to get it
    subset = b.get("subset")
    classes = load_imagenet_subset(subset) if subset else None
    if with_aux and b.get("aux") and not classes:
        raise C.ParamError(f"profile {profile!r}: benchmark.aux {b['aux']!r} draws ImageNet-1k classes, which are all "
                           "ID when benchmark.subset is null; set benchmark.aux to null (CE and BFM need no outliers) "
                           "or choose a subset (imagenet10, imagenet20)")
    id_train = folder_dataset("imagenet", base / "train", classes, **kw)
    id_test = folder_dataset("imagenet", base / "val", list(id_train.classes), **kw)
    if len(id_test.classes) != b["num_classes"]:
        raise C.ParamError(f"profile {profile!r}: benchmark.num_classes is {b['num_classes']} but the ID classes are "
                           f"{len(id_test.classes)}")
    ood = {}
    for disp, name in (b["ood"] if isinstance(b["ood"], dict) else {n: n for n in b["ood"]}).items():
        ood[disp] = folder_dataset(name, locate_folder(name, root), labelled=False, **kw)
    aux = None
    if with_aux and b.get("aux"):
        if b["aux"] != "imagenet-aux100":
            raise C.ParamError(f"profile {profile!r}: benchmark.aux {b['aux']!r} is not available at "
                               f"{b['image_size']}px; allowed: imagenet-aux100, null")
        aux_classes = imagenet_aux_classes(base / "train")
        if set(aux_classes) & set(classes):
            raise DataMissingError(f"imagenet-aux100 overlaps the ID subset {subset!r}; check ood/imagenet_subsets.yaml")
        aux = folder_dataset("imagenet-aux100", base / "train", aux_classes, labelled=False, **kw)
    return Benchmark(name=profile, id_train=id_train, id_test=id_test, ood=ood, aux=aux,
                     num_classes=b["num_classes"], notes=b.get("notes", ""))


def data_manifest(bench: Benchmark) -> pd.DataFrame:
    """One row per set: role, dataset name, size, shape, and a sha256 of its bytes (so stages rerun iff data change)."""
    rows = []

    def add(role, key, ds):
        shape = ds.images.shape[1:] if hasattr(ds, "images") else (3, ds.image_size, ds.image_size)
        rows.append({"role": role, "set": key, "dataset": ds.name, "n": len(ds),
                     "shape": "x".join(map(str, shape)), "sha256": ds.fingerprint()})

    add("id-train", "train", bench.id_train)
    add("id-test", "test", bench.id_test)
    for k, ds in bench.ood.items():
        add("ood", k, ds)
    if bench.aux is not None:
        add("aux", "aux", bench.aux)
    return pd.DataFrame(rows)


def model_spec(params: dict, profile: str | None = None) -> dict:
    block = C.profile_params(params, profile)
    m = dict(block["model"])
    return {"name": m.pop("name"), "num_classes": block["benchmark"]["num_classes"], "mean": m.pop("mean"),
            "std": m.pop("std"), "kwargs": m}


def train_method(params: dict, method: str, profile: str | None = None, *, device: str = "auto", run_dir=None,
                 progress: bool = True, **overrides):
    """Train one method of a profile as params.yaml says (``overrides``: TrainConfig fields, None ignored)."""
    from ood.train import train

    profile = profile or params["profile"]
    cfg = C.method_config(params, method, profile, **overrides)
    p = paths(profile, method)
    needs_aux = cfg.out_batch_size > 0
    bench = load_benchmark(params, profile, with_aux=needs_aux)
    init_dir = paths(profile, cfg.init)["run"] if cfg.init else None
    history = train(cfg, model_spec(params, profile), bench.id_train, run_dir or p["run"], aux=bench.aux,
                    id_test=bench.id_test, init_dir=init_dir, device=C.resolve_device(device), progress=progress)
    if run_dir is None:  # the pipeline's run: publish the history beside the results
        p["history"].parent.mkdir(parents=True, exist_ok=True)
        history.to_csv(p["history"], index=False, float_format="%.6g")
    return cfg, history


def evaluate_method(params: dict, method: str, profile: str | None = None, *, device: str = "auto", run_dir=None,
                    scorers: list[str] | None = None, progress: bool = True):
    """Score a method's trained model with the profile's scorers; write its metrics CSV and score cache."""
    from ood.evaluate import evaluate, save_scores
    from ood.train import load_model

    profile = profile or params["profile"]
    block = C.profile_params(params, profile)
    p = paths(profile, method)
    dev = C.resolve_device(device)
    model = load_model(run_dir or p["run"], dev)
    bench = load_benchmark(params, profile, with_aux=False)
    ev = block["evaluate"]
    names = scorers or ev["scorers"]
    sparams = ev.get("params", {}) or {}
    res = evaluate(model, id_train=bench.id_train, id_test=bench.id_test, ood_sets=bench.ood,
                   scorers={n: sparams.get(n, {}) for n in names}, benchmark=profile, method=method, device=dev,
                   batch_size=ev.get("batch_size", 500), progress=progress,
                   average_over=block["benchmark"].get("average_over"))
    out = res.metrics.copy()
    out["id_accuracy"] = res.id_accuracy
    # the pipeline's run publishes into results/ and cache/; a run of another folder keeps its outputs there
    metrics_path = p["method_metrics"] if run_dir is None else Path(run_dir) / "metrics.csv"
    scores_path = p["scores"] if run_dir is None else Path(run_dir) / "scores.npz"
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(metrics_path, index=False, float_format="%.4f")
    save_scores(res.scores, scores_path)
    return res


def collect(profile: str, methods: list[str], root: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather the per-method metric files into (metrics, accuracy) frames."""
    frames = []
    for m in methods:
        f = paths(profile, m, root)["method_metrics"]
        if not f.is_file():
            raise FileNotFoundError(f"no metrics for method {m!r} at {f}; run its evaluate stage first (dvc repro)")
        frames.append(pd.read_csv(f))
    allm = pd.concat(frames, ignore_index=True)
    acc = allm.groupby("method", sort=False)["id_accuracy"].first().reset_index()
    acc.insert(0, "benchmark", profile)
    from ood.evaluate import METRIC_COLUMNS

    return allm[METRIC_COLUMNS], acc
