"""The authors' published networks: a registry of checkpoint files, fetched and verified like the data sets, loaded
into our WRN-40-2 (issue 39).

Each entry of :data:`CHECKPOINTS` says where the file comes from (the raw GitHub URL in the authors' repository),
its SHA-256, the architecture (a registered ``ood.models`` name and its keyword arguments, e.g. the dropout the
authors trained with), the data set and classes, the preprocessing, how it was trained, and a licence note.

URLs and digests are those of pytorch-ood 0.4.0's model registry (``pytorch_ood/model/registry.py``, the entries
named in each ``source``); we did not download the files to recompute them. The preprocessing is the CIFAR statistics
of the OE and Energy code, mean [125.3, 123.0, 113.9]/255 and std [63.0, 62.1, 66.7]/255 (energy_ood CIFAR/train.py
:74-75; pytorch-ood's ``_CIFAR_PREPROCESSING``), set as our model's ``mean``/``std`` buffers, so the model takes
images in [0, 1] like every ``OODNet``.

Fetching (:func:`fetch_checkpoint`) is the data layer's (``ood.data.fetching.fetch``): the file under the data root
(``<data root>/checkpoints/<file name>``), else at each mirror by file name (``<shared data>/checkpoints`` when that
folder exists, then ``$OOD_MIRRORS``, then the loading profile's ``benchmark.mirrors``), else its official URL; the
SHA-256 is enforced whatever the source, a download goes through a temporary file and is renamed only once it
passes, so a failed or wrong one leaves nothing behind. No source: one ``DataMissingError`` line. The weights are
never committed or put in ``../shared`` by this project: a reader with network fetches them once.

Loading (:func:`load_checkpoint`, :func:`from_authors_layout`) maps the authors' state-dict keys (the layout of
energy_ood ``CIFAR/models/wrn.py``, the same as pytorch-ood's ``WideResNet``) onto ours, one to one:

* ``conv1.*`` and ``fc.*`` -> the same names;
* ``block{g}.layer.{i}.{bn1,conv1,bn2,conv2}.*`` -> ``blocks.{(g - 1) * n + i}.*`` (g = 1, 2, 3; n = 6 blocks per
  group at depth 40), ``block{g}.layer.{i}.convShortcut.*`` -> ``blocks.{(g - 1) * n + i}.shortcut.*``;
* ``bn1.*`` (the last BatchNorm, before pooling) -> ``bn.*``;

with a ``DataParallel`` ``module.`` prefix stripped where every key has one. A key left over or missing (other than
BatchNorm's ``num_batches_tracked``, which files from PyTorch < 0.4.1 lack) is an error naming it.

Test only: ``$OOD_TEST_CHECKPOINT_CHECKSUMS`` (:data:`TEST_CHECKSUMS_ENV`) may name a JSON file ``{checkpoint name:
"sha256:<hex>"}`` whose digests replace the published ones when this module is imported
(:func:`apply_test_checksums`), so that the rehearsal of a paper profile (tests/test_rehearsal.py) can serve a toy
network under a registry name to the DVC stages' subprocesses. Never set it for a real run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from ood.data import fetching
from ood.data.fetching import ChecksumError, DataMissingError
from ood.data.registry import MIRRORS_ENV, FileInfo, mirror_list
from ood.models import OODNet, build_from_spec

__all__ = ["Checkpoint", "CHECKPOINTS", "CHECKPOINT_DIR", "checkpoint_info", "check_benchmark", "describe_checkpoint",
           "fetch_checkpoint", "from_authors_layout", "load_checkpoint", "model_spec", "apply_test_checksums",
           "TEST_CHECKSUMS_ENV"]

#: Where the files go under the data root (``<data root>/checkpoints/<file name>``) and under ``../shared/data``.
CHECKPOINT_DIR = "checkpoints"

#: The CIFAR statistics of the OE and Energy code (energy_ood CIFAR/train.py:74-75, outlier-exposure
#: CIFAR/baseline.py), for images in [0, 1].
OE_CIFAR_MEAN = tuple(x / 255 for x in (125.3, 123.0, 113.9))
OE_CIFAR_STD = tuple(x / 255 for x in (63.0, 62.1, 66.7))


@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint; :func:`describe_checkpoint` prints it."""

    name: str
    title: str
    file: FileInfo                 # path under the data root, official URL, "sha256:<hex>", where the digest is from
    method: str                    # the method of our catalogue it corresponds to (ce, oe, energy_oe)
    dataset: str                   # the ID set it was trained on (an ood.data registry name)
    num_classes: int
    repository: str                # the authors' repository
    repo_path: str                 # the file's path in it
    training: str                  # how the authors trained it
    arch: str = "wrn40_2"          # a registered ood.models name
    kwargs: dict = field(default_factory=lambda: {"drop": 0.3})
    mean: tuple[float, ...] = OE_CIFAR_MEAN
    std: tuple[float, ...] = OE_CIFAR_STD
    preprocessing: str = ("images in [0, 1], normalized with mean [125.3, 123.0, 113.9]/255 and std [63.0, 62.1, "
                          "66.7]/255 (the OE and Energy code); the model applies it itself (OODNet.normalize)")
    licence: str = ("not checked here (no network): the authors' repository states the terms of its files; this "
                    "project does not redistribute them, each reader fetches them from the authors' URL")


_PTOOD = "pytorch-ood 0.4.0, pytorch_ood/model/registry.py, ModelEntry key {!r}: url and sha256"
_ENERGY = "https://github.com/wetliu/energy_ood"
_OE = "https://github.com/hendrycks/outlier-exposure"
_CE_TRAINING = ("cross-entropy, 100 epochs, SGD lr 0.1 cosine, wd 5e-4, batch 128, crop + flip, WRN-40-2 "
                "dropout 0.3 (the OE baseline recipe: outlier-exposure CIFAR/baseline.py; energy_ood CIFAR/train.py "
                "loads it as its starting point)")
_ENERGY_TRAINING = ("Energy-OE fine-tune of {ce}: 10 epochs, lr 0.001 cosine, wd 5e-4, ID batch 128 + 256 outliers "
                    "from 80 Million Tiny Images, margins m_in -{m_in} / m_out -{m_out}, weight 0.1, dropout 0.3, "
                    "seed 1 (energy_ood CIFAR/train.py, run.sh)")
_OE_TRAINING = ("OE fine-tune of the OE code's CE baseline: 10 epochs, lr 0.001 cosine, OE weight 0.5, ID batch 128 "
                "+ 256 outliers from 80 Million Tiny Images, dropout 0.3 (outlier-exposure CIFAR/oe_tune.py)")


def _entry(name: str, title: str, repository: str, repo_path: str, sha256: str, key: str, **kw) -> Checkpoint:
    fname = Path(repo_path).name
    url = f"{repository}/raw/master/{repo_path}"
    return Checkpoint(name=name, title=title, file=FileInfo(f"{CHECKPOINT_DIR}/{fname}", url, f"sha256:{sha256}",
                                                            _PTOOD.format(key)),
                      repository=repository, repo_path=repo_path, **kw)


CHECKPOINTS: dict[str, Checkpoint] = {c.name: c for c in (
    _entry("energy_cifar10_wrn_pretrained", "WRN-40-2, CIFAR-10, cross-entropy (the Energy code's pretrained network)",
           _ENERGY, "CIFAR/snapshots/pretrained/cifar10_wrn_pretrained_epoch_99.pt",
           "0b59e178577382a0cf5d1e079d1d019f6a33b0801b7d123a59e51b4b32972637", "wrn-40-2/cifar10/crossentropy",
           method="ce", dataset="cifar10", num_classes=10, training=_CE_TRAINING),
    _entry("energy_cifar100_wrn_pretrained",
           "WRN-40-2, CIFAR-100, cross-entropy (the Energy code's pretrained network)",
           _ENERGY, "CIFAR/snapshots/pretrained/cifar100_wrn_pretrained_epoch_99.pt",
           "3751f516b81ef9d27290f08a3de78d65a3771f477bd6a6caefa81b330dc34baf", "wrn-40-2/cifar100/crossentropy",
           method="ce", dataset="cifar100", num_classes=100, training=_CE_TRAINING),
    _entry("energy_cifar10_wrn_s1_energy_ft", "WRN-40-2, CIFAR-10, Energy-OE fine-tune (seed 1)",
           _ENERGY, "CIFAR/snapshots/energy_ft/cifar10_wrn_s1_energy_ft_epoch_9.pt",
           "78a288517f9e9f3501c1e881aee8daa1d9c64a23805023fc013a28946274c54b", "wrn-40-2/cifar10/energy/s1",
           method="energy_oe", dataset="cifar10", num_classes=10,
           training=_ENERGY_TRAINING.format(ce="energy_cifar10_wrn_pretrained", m_in=23, m_out=5)),
    _entry("energy_cifar100_wrn_s1_energy_ft", "WRN-40-2, CIFAR-100, Energy-OE fine-tune (seed 1)",
           _ENERGY, "CIFAR/snapshots/energy_ft/cifar100_wrn_s1_energy_ft_epoch_9.pt",
           "4899110e41b8c96a01ec52e779e3336436da69db201f6162b2dce9a207f0f51f", "wrn-40-2/cifar100/energy/s1",
           method="energy_oe", dataset="cifar100", num_classes=100,
           training=_ENERGY_TRAINING.format(ce="energy_cifar100_wrn_pretrained", m_in=27, m_out=5)),
    _entry("oe_cifar10_wrn_oe_tune", "WRN-40-2, CIFAR-10, Outlier Exposure fine-tune",
           _OE, "CIFAR/snapshots/oe_tune/cifar10_wrn_oe_tune_epoch_9.pt",
           "b473f1c463c9fe16057647746907b68b6ade615f93ac4bdf005263ed69d542d0", "wrn-40-2/cifar10/oe",
           method="oe", dataset="cifar10", num_classes=10, training=_OE_TRAINING),
    _entry("oe_cifar100_wrn_oe_tune", "WRN-40-2, CIFAR-100, Outlier Exposure fine-tune",
           _OE, "CIFAR/snapshots/oe_tune/cifar100_wrn_oe_tune_epoch_9.pt",
           "1d4dd53f7605d66f64bcdf146ed9327ecbebbd5da42a9f7d70b9d6a28ee9bb51", "wrn-40-2/cifar100/oe",
           method="oe", dataset="cifar100", num_classes=100, training=_OE_TRAINING),
)}


#: TESTS ONLY: a JSON file of digests that replace the published ones (module docstring).
TEST_CHECKSUMS_ENV = "OOD_TEST_CHECKPOINT_CHECKSUMS"


def apply_test_checksums(path=None) -> None:
    """TESTS ONLY: replace the SHA-256 of each entry named in the JSON file ``path`` (default
    ``$OOD_TEST_CHECKPOINT_CHECKSUMS``; unset or empty: nothing changes). Runs at import. An unknown name or a
    malformed digest is a ValueError naming it."""
    import dataclasses
    import json
    import os

    path = os.environ.get(TEST_CHECKSUMS_ENV, "") if path is None else str(path)
    if not path:
        return
    with open(path) as f:
        table = json.load(f)
    for name, digest in table.items():
        if name not in CHECKPOINTS or not re.fullmatch(r"sha256:[0-9a-f]{64}", str(digest)):
            raise ValueError(f"{TEST_CHECKSUMS_ENV}={path}: entry {name!r}: {digest!r} must map a registered "
                             f"checkpoint to 'sha256:<64 hex digits>'; registered: {', '.join(CHECKPOINTS)}")
        c = CHECKPOINTS[name]
        CHECKPOINTS[name] = dataclasses.replace(c, file=dataclasses.replace(c.file, checksum=digest,
                                                                            source="a test's digest"))


apply_test_checksums()


def checkpoint_info(name: str) -> Checkpoint:
    """The registry entry of ``name``; ValueError naming the allowed names if there is none."""
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown published checkpoint {name!r}; allowed: {', '.join(CHECKPOINTS)}")
    return CHECKPOINTS[name]


def describe_checkpoint(name: str) -> str:
    """Every field of an entry, one per line."""
    c = checkpoint_info(name)
    return "\n".join([
        f"{c.name}: {c.title}", f"  file: <data root>/{c.file.path}  from {c.file.url}  {c.file.checksum}",
        f"  checksum from: {c.file.source}", f"  source: {c.repository} {c.repo_path}",
        f"  model: {c.arch} {c.kwargs}, {c.num_classes} classes of {c.dataset} (method {c.method})",
        f"  preprocessing: {c.preprocessing}", f"  training: {c.training}", f"  licence: {c.licence}"])


def model_spec(name: str) -> dict:
    """The model spec of an entry (``ood.models.build_from_spec``; what a checkpoint of ours stores)."""
    c = checkpoint_info(name)
    return {"name": c.arch, "num_classes": c.num_classes, "mean": list(c.mean), "std": list(c.std),
            "kwargs": dict(c.kwargs)}


def check_benchmark(name: str, benchmark: dict, profile: str) -> Checkpoint:
    """The entry of ``name``, checked against a profile's ``benchmark`` block: the same ID set and number of classes,
    32 px images. ValueError saying which differs."""
    c = checkpoint_info(name)
    got = {"id": benchmark.get("id"), "num_classes": benchmark.get("num_classes"),
           "image_size": benchmark.get("image_size", 32)}
    want = {"id": c.dataset, "num_classes": c.num_classes, "image_size": 32}
    for key in want:
        if got[key] != want[key]:
            raise ValueError(f"published checkpoint {name!r} was trained on {c.dataset} ({c.num_classes} classes, 32 "
                             f"px), but profile {profile!r} has benchmark {key} {got[key]!r}; pick a profile whose ID "
                             f"set is {c.dataset}, or a checkpoint of {got['id']}")
    return c


def _mirrors(mirrors) -> list[str]:
    """``../shared/data/checkpoints`` when that folder exists, then ``mirror_list(mirrors)``."""
    shared = fetching.SHARED_DATA / CHECKPOINT_DIR
    return ([str(shared)] if shared.is_dir() else []) + mirror_list(mirrors)


def fetch_checkpoint(name: str, root=None, mirrors=None, *, download: bool = True) -> Path:
    """The file of ``name`` under the data root (``root``, default ``ood.data.fetching.DATA_ROOT``), checked against
    its SHA-256; fetched if absent: the mirrors (module docstring) then, with ``download``, its official URL.

    Nothing there: one-line ``DataMissingError`` naming the sources tried and what to do offline. A source serving
    the wrong file, or a corrupt file under the data root that no source replaces: ``ChecksumError``."""
    c = checkpoint_info(name)
    root = fetching.data_root(root)
    dest = root / c.file.path
    corrupt = None
    if dest.is_file():
        try:
            fetching.verify(dest, c.file)
            return dest
        except ChecksumError as e:
            corrupt = e
    ms = _mirrors(mirrors)
    offline = (f"without network, copy {Path(c.file.path).name} into a folder named in ${MIRRORS_ENV} (this project "
               "never ships the authors' weights)")
    if not ms and not download:
        raise DataMissingError(f"published checkpoint {name}: missing {dest}; no mirror is configured and download is "
                               f"off: download {c.file.url} ({c.file.checksum}), or {offline}.")
    try:
        return fetching.fetch(name, c.file, root, ms, official=download)
    except DataMissingError as e:
        if corrupt is not None:
            raise ChecksumError(f"{str(corrupt).rstrip('.')}; no source had a good copy ({e})") from None
        raise DataMissingError(f"published checkpoint {str(e).rstrip('.')}; {offline}.") from None


def _strip_module(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` without the ``module.`` prefix that ``nn.DataParallel`` adds, when every key has it."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


_AUTHORS_BLOCK = re.compile(r"block([123])\.layer\.(\d+)\.(.+)")


def from_authors_layout(state: Mapping[str, Tensor], model: OODNet) -> dict[str, Tensor]:
    """The state dict of the authors' WideResNet (energy_ood / outlier-exposure ``CIFAR/models/wrn.py``, pytorch-ood's
    ``WideResNet``; a ``module.`` prefix allowed) as the state dict of our ``model`` (an ``ood.models.WideResNet`` of
    the same depth and width): the key map of the module docstring, our ``mean``/``std`` buffers taken from
    ``model``. ValueError naming any key left over or missing; shapes are checked by ``load_state_dict``."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in
                                                 state.items()):
        raise ValueError(f"a state dict (names -> tensors) was expected, got a {type(state).__name__}")
    n = len(model.blocks) // 3
    ours = model.state_dict()
    out, extra = {}, []
    for key, value in _strip_module(state).items():
        m = _AUTHORS_BLOCK.fullmatch(key)
        if m and int(m[2]) < n:
            rest = "shortcut." + m[3][len("convShortcut."):] if m[3].startswith("convShortcut.") else m[3]
            new = f"blocks.{(int(m[1]) - 1) * n + int(m[2])}.{rest}"
        elif key.startswith("bn1."):
            new = "bn." + key[len("bn1."):]
        else:
            new = key if key.split(".", 1)[0] in ("conv1", "fc") else None
        if new in ours and new not in ("mean", "std"):
            out[new] = value
        else:
            extra.append(key)     # named as in the file
    out["mean"], out["std"] = ours["mean"], ours["std"]
    for key in ours:        # files saved before PyTorch 0.4.1 have no BatchNorm step counter; it plays no part in eval
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = ours[key]
    missing = [k for k in ours if k not in out]
    if missing or extra:
        raise ValueError(f"the authors' state dict does not map onto {type(model).__name__}: {len(missing)} keys "
                         f"missing ({_some(missing)}), {len(extra)} left over ({_some(extra)})")
    return out


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def load_checkpoint(name: str, device="cpu", root=None, mirrors=None, *, download: bool = True) -> OODNet:
    """The published network ``name`` as our model (``model_spec(name)``: WRN-40-2 with the authors' dropout and
    normalization), in eval mode on ``device``; the file fetched and checked by :func:`fetch_checkpoint`."""
    path = fetch_checkpoint(name, root, mirrors, download=download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling error, a file of another kind
        raise ValueError(f"{path} (published checkpoint {name}) is not a state dict torch.load can read "
                         f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    model = build_from_spec(model_spec(name))
    try:
        model.load_state_dict(from_authors_layout(state, model))
    except RuntimeError as e:   # a shape that differs
        raise ValueError(f"published checkpoint {name} ({path}) does not fit {model_spec(name)}: "
                         f"{str(e).strip().splitlines()[-1].strip()}") from None
    return model.to(device).eval()

