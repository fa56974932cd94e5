"""The glue the notebooks call: params.yaml -> data, model, training run, evaluation, tables.

Paths (relative to the repository root; ``<p>`` is the profile, ``<m>`` the method):

* ``runs/<p>/<m>/``: the executed notebooks of the method's stages, and ``seeds/<s>/`` per seed ``s`` of
  params.yaml ``seeds``: ``checkpoint.pt`` (each epoch), ``model.pt``, ``history.csv`` (DVC outputs, not in git);
* ``cache/<p>/<m>/seed<s>.npz``: every scorer's scores on every set, per seed (DVC output, not in git);
* ``results/<p>/``: ``data.csv`` (what the data stage checked), ``runs/<m>.csv`` (one method's
  metrics, one row per seed, scorer and set), ``history/<m>.csv`` (per seed, no wall-clock column),
  ``metrics.csv`` and ``accuracy.csv`` (per seed plus mean and std rows, see ``ood.tables``), the
  ``.md``/``.tex`` tables (mean +- std over seeds), ``summary.json``;
* ``figures/<p>/``: the figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ood import config
from ood.data import ArrayDataset, describe as describe_dataset, load
from ood.distributed import world
from ood.numerics import check_choice, check_number

__all__ = ["describe_dataset", "collect", "FIGURES", "StageInputs", "stage_inputs", "Benchmark", "load_benchmark",
           "model_spec", "paths", "seed_dir", "seeds_of", "train_method", "fit_set", "evaluate_method",
           "SeedEvaluation", "data_manifest"]


def paths(profile: str, method: str | None = None, root: Path | None = None,
          seed: int | None = None) -> dict[str, Path]:
    """Where a profile's (and a method's, and one seed's) files live; see the module docstring."""
    root = root or config.repo_root()
    p = {
        "results": root / "results" / profile,
        "figures": root / "figures" / profile,
        "runs": root / "runs" / profile,
        "cache": root / "cache" / profile,
        "data_root": root / "data",
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
    scorers: list[str]              # the profile's evaluate.scorers
    ood_sets: list[str]             # the profile's benchmark.ood
    seeds: list[int]                # params.yaml seeds
    out: dict[str, Path]            # paths(profile): results/<p>, figures/<p>, ...
    figures: dict[str, list[str]]   # figure -> the methods it shows (pipeline.figures, evaluated methods only)

    @property
    def label(self) -> str:
        """The profile's one-line note on its benchmark (``benchmark.notes``), for the tables' captions."""
        return self.params[self.profile]["benchmark"].get("notes", "")

    def scores(self, methods: list[str], seed: int) -> dict:
        """Every scorer's scores on every set (``ood.evaluate.load_scores``) of one seed's run, by method."""
        from ood.evaluate import load_scores

        return {m: load_scores(paths(self.profile, m, seed=seed)["scores"]) for m in methods}

    def models(self, methods: list[str], seed: int) -> dict:
        """The trained models of one seed (``ood.train.load_model``, eval mode, CPU), by method."""
        from ood.train import load_model

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
            check_choice(m, f"a method of pipeline.figures.{name}", list(block["method"]), error=config.ParamError)
        figures[name] = [m for m in shown if m in methods]
    return StageInputs(profile=profile, params=params, methods=methods, scorers=list(block["evaluate"]["scorers"]),
                       ood_sets=list(block["benchmark"]["ood"]), seeds=seeds_of(params), out=paths(profile),
                       figures=figures)


@dataclass
class Benchmark:
    name: str
    id_train: ArrayDataset
    id_test: ArrayDataset
    ood: dict[str, ArrayDataset]       # display name -> dataset
    aux: ArrayDataset | None
    num_classes: int
    notes: str = ""


def load_benchmark(params: dict, profile: str | None = None, *, with_aux: bool = True,
                   data_root: Path | None = None) -> Benchmark:
    """Load (generating or reading from the data root) every set of a profile's benchmark block."""
    profile = profile or params["profile"]
    b = config.profile_params(params, profile)["benchmark"]
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


#: Auxiliary outliers of the ImageNet profile, as ImageNet-1k training classes k (sorted wnid order) picked by
#: perm = numpy.random.RandomState(1993).permutation(1000) (ood/imagenet_subsets.yaml states the rule and its check
#: against the authors' files):
#: ``imagenet-other``: every class outside the N-class ID subset, perm[k] >= N, as Greg-OOD's loader
#: (datasets/imagenetUtil.py:53,60, ``class_index_ood = range(N, 1000)``) [code];
#: ``imagenet-aux100``: 100 <= perm[k] < 200, the file imagenetAuxClassAndIndex.pth that no Greg-OOD code loads
#: (an earlier choice of this project, kept selectable).
IMAGENET_AUX_RULE = {"seed": 1993, "low": 100, "high": 200}
IMAGENET_AUX = ("imagenet-other", "imagenet-aux100")


def imagenet_aux_classes(train_folder: Path, aux: str = "imagenet-aux100", n_id: int | None = None) -> list[str]:
    """The wnids of GReg's ImageNet auxiliary-outlier classes (``aux``, one of :data:`IMAGENET_AUX`; ``n_id``: the
    size of the ID subset, for ``imagenet-other``), from the 1,000 class folders of ``train_folder``."""
    import numpy as np

    if aux not in IMAGENET_AUX:
        raise config.ParamError(f"unknown ImageNet auxiliary set {aux!r}; allowed: {', '.join(IMAGENET_AUX)}, null")
    wnids = sorted(d.name for d in Path(train_folder).iterdir() if d.is_dir())
    if len(wnids) != 1000:
        raise config.ParamError(f"{aux} needs the 1,000 ImageNet-1k class folders under {train_folder} (the rule "
                                f"permutes all of them), found {len(wnids)}; set the profile's benchmark.aux to null "
                                "to train without outliers")
    perm = np.random.RandomState(IMAGENET_AUX_RULE["seed"]).permutation(1000)
    if aux == "imagenet-other":
        if not n_id:
            raise config.ParamError("imagenet-other needs the size of the ID subset (n_id)")
        return [w for w, p in zip(wnids, perm) if p >= n_id]
    return [w for w, p in zip(wnids, perm) if IMAGENET_AUX_RULE["low"] <= p < IMAGENET_AUX_RULE["high"]]


def _folder_benchmark(b: dict, profile: str, root: Path, *, with_aux: bool) -> Benchmark:
    """A full-resolution benchmark (the ImageNet profile) of FolderDatasets, streamed from ``root``.

    ID: ``<root>/imagenet/{train,val}/<wnid>/`` restricted to ``benchmark.subset`` (a GReg class subset of
    ood/imagenet_subsets.yaml, labels in its order; null: all 1,000 classes). OOD: the registry's image folders
    (load_folder's checks and messages). Auxiliary: one of :data:`IMAGENET_AUX` or null.
    """
    from ood.data import DataMissingError, folder_dataset, load_folder, locate_folder
    from ood.reference import load_imagenet_subset

    if b["id"] != "imagenet":
        raise config.ParamError(f"profile {profile!r}: image_size {b['image_size']} needs benchmark.id imagenet "
                                f"(the only full-resolution ID set), got {b['id']!r}")
    kw = {"image_size": b["image_size"], "resize": b.get("resize", 256), "workers": b.get("workers", 4)}
    base = root / "imagenet"
    for split in ("train", "val"):
        if not (base / split).is_dir():
            load_folder("imagenet", root, split=split)   # raises the DataMissingError with where to get it
    subset = b.get("subset")
    classes = load_imagenet_subset(subset) if subset else None
    if with_aux and b.get("aux") and not classes:
        raise config.ParamError(f"profile {profile!r}: benchmark.aux {b['aux']!r} draws ImageNet-1k classes, which "
                                "are all ID when benchmark.subset is null; set benchmark.aux to null (CE and BFM need "
                                "no outliers) or choose a subset (imagenet10, imagenet20)")
    id_train = folder_dataset("imagenet", base / "train", classes, **kw)
    id_test = folder_dataset("imagenet", base / "val", list(id_train.classes), **kw)
    if len(id_test.classes) != b["num_classes"]:
        raise config.ParamError(f"profile {profile!r}: benchmark.num_classes is {b['num_classes']} but the ID "
                                f"classes are {len(id_test.classes)}")
    ood = {}
    for disp, name in (b["ood"] if isinstance(b["ood"], dict) else {n: n for n in b["ood"]}).items():
        ood[disp] = folder_dataset(name, locate_folder(name, root), labelled=False, **kw)
    aux = None
    if with_aux and b.get("aux"):
        if b["aux"] not in IMAGENET_AUX:
            raise config.ParamError(f"profile {profile!r}: benchmark.aux {b['aux']!r} is not available at "
                                    f"{b['image_size']}px; allowed: {', '.join(IMAGENET_AUX)}, null")
        aux_classes = imagenet_aux_classes(base / "train", b["aux"], len(classes))
        if set(aux_classes) & set(classes):
            raise DataMissingError(f"{b['aux']} overlaps the ID subset {subset!r}; check ood/imagenet_subsets.yaml")
        aux = folder_dataset(b["aux"], base / "train", aux_classes, labelled=False, **kw)
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


def model_spec(params: dict, profile: str | None = None, method: str | None = None) -> dict:
    """The network ``method`` trains (``ood.models.build_model`` arguments): the profile's ``model`` block with the
    method's own overrides (``config.method_model``; None: the profile's block alone)."""
    block = config.profile_params(params, profile)
    m = config.method_model(block, method) if method else dict(block["model"])
    return {"name": m.pop("name"), "num_classes": block["benchmark"]["num_classes"], "mean": m.pop("mean"),
            "std": m.pop("std"), "kwargs": m}


#: History columns that measure the machine, not the run: kept in runs/, left out of the published histories.
WALL_CLOCK_COLUMNS = ["seconds"]


def seed_workers(params: dict) -> int:
    """How many seeds a stage runs at once (the pipeline's params file, ``seed_workers``; default 1)."""
    return check_number(params.get("seed_workers", 1), "'seed_workers'", low=1, integer=True, strict=True,
                        error=config.ParamError)


def map_seeds(fn, seeds: list[int], workers: int, on_device: str, **kwargs) -> list:
    """``[fn(seed=s, **kwargs) for s in seeds]``, with up to ``workers`` seeds at once on a CPU.

    With ``workers`` > 1 (and more than one seed, on the CPU) each seed runs in its own process (``spawn``; ``fn``
    must be a module-level function of the package) with ``ood.repro.THREADS // workers`` threads, so the machine's
    cores are split between the seeds instead of shared by every operation: on this project's 2-core CPU, two
    1-thread processes train 1.2x as many images per second as one 2-thread process (SmallNet width 32, depth
    [1, 2, 2]: 105 s per CIFAR-10 epoch each, side by side, vs 63 s alone; measured 2026-11-29). A seed's numbers
    then come from 1-thread kernels: bit-reproducible like every pinned run, but not the bits of ``workers: 1``.
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


def _train_seed(*, seed: int, params: dict, method: str, profile: str, overrides: dict, base: Path, device: str,
                progress: bool, init_base: Path | None = None) -> pd.DataFrame:
    """One seed of :func:`train_method` (module level, so that a worker process can run it)."""
    from ood.train import train

    cfg = config.method_config(params, method, profile, **{**overrides, "seed": seed})
    bench = load_benchmark(params, profile, with_aux=cfg.out_batch_size > 0)
    init_dir = None
    if cfg.init:
        init_dir = (seed_dir(Path(init_base), seed) if init_base is not None
                    else paths(profile, cfg.init, seed=seed)["run"])
    h = train(cfg, model_spec(params, profile, method), bench.id_train, seed_dir(base, seed), aux=bench.aux,
              id_test=bench.id_test, init_dir=init_dir, device=config.resolve_device(device), progress=progress)
    return h.assign(seed=seed)


def train_method(params: dict, method: str, profile: str | None = None, *, device: str = "auto", run_dir=None,
                 seeds: list[int] | None = None, progress: bool = True, init_dir=None, **overrides):
    """Train one method of a profile once per seed, as the profile says (``overrides``: TrainConfig fields, None
    ignored). Seed ``s`` runs in ``<run_dir>/seeds/<s>/`` (default run_dir: ``runs/<profile>/<method>``); a
    fine-tune of seed ``s`` starts from seed ``s`` of the method it fine-tunes from (``<init_dir>/seeds/<s>/`` when
    ``init_dir`` is given, else the pipeline's run of that method). Under torchrun every rank calls this; rank 0
    writes the files (``ood.distributed``).

    Returns (the TrainConfig of the last seed, the histories of every seed with a ``seed`` column). The pipeline's
    run (run_dir None) also publishes the histories to ``results/<profile>/history/<method>.csv``, without the
    wall-clock columns, so that they are the same bits on every machine.
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
        history.drop(columns=WALL_CLOCK_COLUMNS, errors="ignore").to_csv(p["history"], index=False, float_format="%.6g")
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
_LAUNCH_OPTIONS = {"epochs": "--epochs", "steps_per_epoch": "--steps-per-epoch", "lr": "--lr",
                   "batch_size": "--batch-size"}


def launch_train(params: dict, method: str, profile: str, nproc: int, *, device: str, run_dir: Path,
                 seeds: list[int], overrides: dict, init_dir=None) -> None:
    """Train through ``torchrun --standalone --nproc_per_node N -m ood train ...`` (PyTorch's launcher, one node),
    one launch per seed, with the params file ``params`` was read from; raises ``TrainingError`` naming the command
    when it fails. Used by :func:`train_method` when the profile says ``distributed: {nproc_per_node: N}``."""
    import subprocess
    import sys

    from ood.train import TrainingError

    bad = sorted(k for k, v in overrides.items() if v is not None and k not in _LAUNCH_OPTIONS)
    if bad:
        raise config.ParamError(f"override(s) {', '.join(bad)} cannot be passed to a torchrun launch; allowed: "
                                f"{', '.join(_LAUNCH_OPTIONS)}")
    for seed in seeds:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "ood", "train", "--profile", profile, "--method", method, "--device", str(device),
               "--run-dir", str(run_dir), "--seed", str(seed),
               "--params", str(params.get("_source") or config.params_path())]
        cmd += [a for k, opt in _LAUNCH_OPTIONS.items() if overrides.get(k) is not None
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


def fit_set(id_train: ArrayDataset, evaluate_block: dict, data_seed: int = 0) -> ArrayDataset:
    """The ID-train images the fitted scorers (Mahalanobis, KNN, ViM, ReAct/DICE/ASH statistics) see: all of them,
    or with the profile's ``evaluate.fit_size: n`` a uniformly random ``n`` (``ArrayDataset.subset(n, data_seed)``,
    the same for every method and seed)."""
    n = evaluate_block.get("fit_size")
    if n is None:
        return id_train
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= len(id_train):
        raise config.ParamError(f"invalid value {n!r} for 'evaluate.fit_size'; allowed: null (all {len(id_train)} "
                                f"ID-train images) or an integer in 1..{len(id_train)}")
    return id_train.subset(n, data_seed)


def _evaluate_seed(*, seed: int, params: dict, method: str, profile: str, base: Path, cache: Path, device: str,
                   scorers: list[str] | None, progress: bool):
    """One seed of :func:`evaluate_method`: scores, writes its score cache, returns its ``EvalResult``."""
    from ood.evaluate import evaluate, save_scores
    from ood.train import load_model

    block = config.profile_params(params, profile)
    ev = block["evaluate"]
    dev = config.resolve_device(device)
    bench = load_benchmark(params, profile, with_aux=False)
    sparams = ev.get("params", {}) or {}
    res = evaluate(load_model(seed_dir(base, seed), dev),
                   id_train=fit_set(bench.id_train, ev, block["benchmark"].get("data_seed", 0)),
                   id_test=bench.id_test, ood_sets=bench.ood,
                   scorers={n: sparams.get(n, {}) for n in scorers or ev["scorers"]}, benchmark=profile, method=method,
                   device=dev, batch_size=ev.get("batch_size", 500), progress=progress,
                   average_over=block["benchmark"].get("average_over"), protocol=ev.get("protocol", "greg-detect"))
    if world().main:   # under torchrun every rank holds the gathered scores; rank 0 writes them
        save_scores(res.scores, cache / f"seed{seed}.npz")
    return res


def evaluate_method(params: dict, method: str, profile: str | None = None, *, device: str = "auto", run_dir=None,
                    seeds: list[int] | None = None, scorers: list[str] | None = None, progress: bool = True):
    """Score each seed's trained model of a method with the profile's scorers.

    Writes one metrics CSV for the method (``seed`` column; ``results/<profile>/runs/<method>.csv``, or
    ``<run_dir>/metrics.csv``) and one score cache per seed (``cache/<profile>/<method>/seed<s>.npz``, or
    ``<run_dir>/scores/seed<s>.npz``). Returns a :class:`SeedEvaluation`.
    """
    profile = profile or params["profile"]
    p = paths(profile, method)
    base = Path(run_dir) if run_dir is not None else p["method_runs"]
    cache = p["method_cache"] if run_dir is None else base / "scores"
    seeds = seeds_of(params, seeds)
    workers = seed_workers(params)
    runs = map_seeds(_evaluate_seed, seeds, workers, device, params=params, method=method, profile=profile,
                     base=base, cache=cache, device=device, scorers=scorers, progress=progress and workers == 1)
    results, frames = {}, []
    for seed, res in zip(seeds, runs):
        out = res.metrics.copy()
        out.insert(2, "seed", seed)
        out["id_accuracy"] = res.id_accuracy
        frames.append(out)
        results[seed] = res
    # the pipeline's run publishes into results/ and cache/; a run of another folder keeps its outputs there
    metrics_path = p["method_metrics"] if run_dir is None else base / "metrics.csv"
    per_seed = pd.concat(frames, ignore_index=True)
    if world().main:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        per_seed.to_csv(metrics_path, index=False, float_format="%.4f")
    return SeedEvaluation(per_seed, results)


@dataclass
class SeedEvaluation:
    """One method's evaluation over seeds: ``metrics`` has one row per seed, scorer and set (``seed`` and
    ``id_accuracy`` columns); ``runs`` maps each seed to its ``ood.evaluate.EvalResult`` (scores included)."""

    metrics: pd.DataFrame
    runs: dict


def collect(profile: str, methods: list[str], root: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gather the per-method metric files into per-seed (metrics, accuracy) frames (``seed`` column)."""
    from ood.evaluate import METRIC_COLUMNS

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
    acc = allm.groupby(["method", "seed"], sort=False)["id_accuracy"].first().reset_index()
    acc.insert(0, "benchmark", profile)
    cols = METRIC_COLUMNS[:2] + ["seed"] + METRIC_COLUMNS[2:]
    return allm[cols], acc
