"""A profile's benchmark: its ID train and test sets, OOD test sets and auxiliary outliers, loaded by name.

The data stage loads every set of the profile's ``benchmark`` block and records what it read (``data.csv``); the
train, evaluate and figures stages load them again the same way. 32x32 sets are ``ood.data.ArrayDataset`` s in
memory; the ImageNet profile streams its images from the files (``ood.data.FolderDataset``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ood import config
from ood.data import ArrayDataset, load
from ood.data.registry import profile_mirrors
from ood.numerics import check_choice
from ood.pipeline import paths

__all__ = ["Benchmark", "load_benchmark", "data_manifest", "fit_set", "IMAGENET_AUX", "IMAGENET_AUX_RULE",
           "imagenet_aux_classes", "load_imagenet_subset", "IMAGENET_SUBSETS_YAML"]


#: The GReg ImageNet class subsets (wnids, labels, and the rule that draws them).
IMAGENET_SUBSETS_YAML = Path(__file__).with_name("imagenet_subsets.yaml")


def load_imagenet_subset(name: str) -> list[str]:
    """The wnids of a GReg ImageNet subset (``"imagenet10"`` or ``"imagenet20"``) in label order.

    From ``ood/imagenet_subsets.yaml``, which states how the authors' code draws them
    (seeded permutation, github.com/o4lc/Greg-OOD) and that the rule reproduces their files.
    """
    data = yaml.safe_load(IMAGENET_SUBSETS_YAML.read_text())
    check_choice(name, "ImageNet subset", ("imagenet10", "imagenet20"))
    entries = sorted(data[name], key=lambda e: e["label"])
    return [e["wnid"] for e in entries]


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
    """Load (generating or reading from the data root) every set of a profile's benchmark block; a file absent from
    the data root is looked for at the mirrors (``$OOD_MIRRORS``, then the block's ``mirrors`` list) and then, when
    the block says ``download: true`` (the paper profiles; default false), at its official URL, before it fails."""
    profile = profile or params["profile"]
    b = config.profile_params(params, profile)["benchmark"]
    with profile_mirrors(b.get("mirrors")):
        return _load_benchmark(b, profile, with_aux=with_aux, data_root=data_root)


def _load_benchmark(b: dict, profile: str, *, with_aux: bool, data_root: Path | None) -> Benchmark:
    root = data_root or paths(profile)["data_root"]
    seed = b.get("data_seed", 0)
    sizes = b.get("sizes", {}) or {}
    if b.get("image_size", 32) != 32:
        return _folder_benchmark(b, profile, Path(root), with_aux=with_aux)

    download = _download(b, profile)

    def get(name, split, size_key):
        return load(name, split, root, seed=seed, n=sizes.get(size_key), download=download)

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


def _download(b: dict, profile: str) -> bool:
    """The block's ``download`` (default false): whether a file at no mirror is fetched from its official URL."""
    d = b.get("download", False)
    if not isinstance(d, bool):
        raise config.ParamError(f"invalid value {d!r} for 'benchmark.download' of profile {profile!r}; allowed: true, "
                                "false")
    return d


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
    ood, download = {}, _download(b, profile)
    for disp, name in (b["ood"] if isinstance(b["ood"], dict) else {n: n for n in b["ood"]}).items():
        ood[disp] = folder_dataset(name, locate_folder(name, root, download=download), labelled=False, **kw)
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
