"""Reading and validating ``params.yaml`` and ``profiles/*.yaml``, and the parameters of the notebooks.

``params.yaml`` and ``profiles/<name>.yaml`` hold every knob of the pipeline; :func:`load_params` merges them into
one mapping whose top level is:

* ``profile``: the benchmark profile the pipeline runs (``synthetic`` by default; the paper profiles
  ``cifar10``, ``cifar100``, ``imagenet`` and the stand-in ``cifar10-offline``). Switch with
  ``dvc exp run -S profile=cifar10`` (or edit the line and ``dvc repro``).
* ``seeds``, ``seed_workers``, ``device`` (``auto`` | ``cpu`` | ``cuda``), ``root``, ``params_file``.
* ``pipeline``: which methods train from scratch and which fine-tune from which checkpoint
  (this is what ``dvc.yaml`` iterates over; the starting checkpoints are :data:`ood.methods.METHODS`' ``init``).
* ``profiles``: one block per profile, by name (the file ``profiles/<name>.yaml``, whose single top-level key is
  ``<name>``; read with :func:`profile_params`), each with the same sub-blocks: ``benchmark`` (data), ``model``,
  ``recipes`` (training schedules), ``method`` (one entry per training method, stating only what differs for the
  profile: its recipe, its loss terms' and sampler's parameters, overrides; the composition itself, which terms,
  which sampler, which starting checkpoint, is :data:`ood.methods.METHODS`'), ``evaluate`` (scorers, by default
  every registered one, and their parameters).

A method's effective training configuration is its composition and its recipe with the method's own keys applied
(:func:`method_config`). Everything is validated here so that a typo fails at the start of a stage,
with a one-line message naming the key and the allowed values.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from ood.methods import METHODS
from ood.numerics import check_choice, check_number

__all__ = [
    "ParamError", "repo_root", "load_params", "profile_params", "method_config", "method_model", "model_spec",
    "TrainConfig",
    "OPTIMIZERS", "MODEL_OVERRIDES", "OVERRIDES", "override_rule", "override_help",
    "NotebookParams", "NOTEBOOK_SCHEMAS", "is_seed_list", "check_notebook_params", "resolve_device",
    "uses_channels_last",
]


class ParamError(ValueError):
    """A parameter has an unknown name or an invalid value. The message is one line."""


def repo_root(start: Path | None = None) -> Path:
    """The repository root: the first parent of ``start`` holding params.yaml. Default start: the folder in the
    environment variable ``OOD_ROOT`` if set (the test suite points it at the copy its pipeline runs in), else this
    package's folder."""
    here = Path(start or os.environ.get("OOD_ROOT") or Path(__file__).resolve().parent).resolve()
    for p in (here, *here.parents):
        if (p / "params.yaml").is_file():
            return p
    raise FileNotFoundError(f"no params.yaml found above {here}; run from a checkout of the repository")


def outside_dvc_temp(path: Path) -> Path:
    """``<checkout>`` for a path inside ``<checkout>/.dvc/tmp/exps/`` (the temporary copies of the checkout in which
    ``dvc exp run --queue`` runs each experiment, without the ignored data folder), else ``path``: a queued
    experiment reads the checkout's data root and ``../shared/data``."""
    parts = Path(path).parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return Path(path)


#: The key of :func:`load_params`' mapping under which every ``profiles/<name>.yaml`` is read, by name: a profile does
#: not share the top level with the pipeline's own keys (``profile``, ``seeds``, ``device``, ``pipeline``, ...).
PROFILES_KEY = "profiles"

#: Environment variable naming the params file of the pipeline a stage belongs to, relative to the repository root
#: (``pipelines/<profile>/params.yaml`` for a profile's own pipeline, see dvc.yaml); unset: ``params.yaml``.
PARAMS_ENV = "OOD_PARAMS"


def params_path() -> Path:
    """The params file that :func:`load_params` reads by default: ``$OOD_PARAMS`` (relative to the repository root)
    or the repository's ``params.yaml``."""
    rel = os.environ.get(PARAMS_ENV) or "params.yaml"
    path = repo_root() / rel
    if not path.is_file():
        raise FileNotFoundError(f"{PARAMS_ENV}={rel!r} names no file: {path} does not exist (set it to a pipeline's "
                                f"params file, e.g. pipelines/cifar10-cpu/params.yaml, or unset it)")
    return path


def load_params(path: str | Path | None = None) -> dict:
    """A pipeline's params file (default: :func:`params_path`) merged with every ``profiles/<name>.yaml`` of the
    repository (the folder ``profiles`` beside the file, else the repository root's)."""
    path = Path(path) if path else params_path()
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict) or "profile" not in params:
        raise ParamError(f"{path} must be a mapping with a top-level 'profile' key")
    if PROFILES_KEY in params:
        raise ParamError(f"{path}: {PROFILES_KEY!r} is where the profiles/<name>.yaml files are read to; a params file "
                         "may not set it (put a profile in profiles/<name>.yaml)")
    base = path.parent if (path.parent / "profiles").is_dir() else repo_root()
    params[PROFILES_KEY] = profiles_ = {}
    for prof in sorted((base / "profiles").glob("*.yaml")):
        with open(prof) as f:
            block = yaml.safe_load(f)
        if not isinstance(block, dict) or list(block) != [prof.stem]:
            raise ParamError(f"{prof} must hold one top-level key, {prof.stem!r} (the profile's name), "
                             f"found {list(block) if isinstance(block, dict) else type(block).__name__}")
        profiles_[prof.stem] = block[prof.stem]
    params["_source"] = str(path.resolve())   # the file read (a torchrun launch passes it on to its processes)
    return params


def profiles(params: dict) -> list[str]:
    """The names of the profiles :func:`load_params` read (``params["profiles"]``), sorted."""
    return sorted(params.get(PROFILES_KEY) or {})


def profile_params(params: dict, profile: str | None = None) -> dict:
    profile = profile or params["profile"]
    allowed = profiles(params)
    if profile not in allowed:
        raise ParamError(f"unknown profile {profile!r}; allowed: {', '.join(allowed)}")
    block = params[PROFILES_KEY][profile]
    for key in ("benchmark", "model", "recipes", "method", "evaluate"):
        if key not in block:
            raise ParamError(f"profile {profile!r} lacks its {key!r} block in profiles/{profile}.yaml")
    near, sets = block["benchmark"].get("near"), list(block["benchmark"].get("ood") or {})
    if near is not None and (not isinstance(near, list) or any(n not in sets for n in near)):
        raise ParamError(f"profiles/{profile}.yaml: benchmark.near={near!r} must list OOD sets of benchmark.ood (the "
                         f"near-OOD ones); allowed: {', '.join(map(str, sets))}")
    return block


# ---------------------------------------------------------------------------------------------
# Training configuration
# ---------------------------------------------------------------------------------------------

#: Optimizers a recipe can name: SGD (with ``momentum``/``nesterov``), Adam (L2 ``weight_decay`` added to the
#: gradient, as ``torch.optim.Adam``; Greg-OOD trains every ImageNet run with ``Adam(lr)``), AdamW (decoupled decay).
OPTIMIZERS = ("sgd", "adam", "adamw")

#: Keys of a profile's ``model`` block that a method may override with its own ``model: {...}`` (the network's
#: name and the class count stay the profile's, so that every method of a profile shares one architecture):
#: ``drop`` (WRN dropout; the OE/Energy-OE code trains its WRN with 0.3, GReg's with 0), ``mean``/``std`` (the
#: input normalization; GReg normalizes CIFAR-100 with CIFAR-100 statistics, the OE/Energy-OE code with CIFAR-10's).
MODEL_OVERRIDES = ("drop", "mean", "std")


def _knob(default=None, *, check: dict | None = None, override: str | None = None, **kw):
    """A TrainConfig field: ``check`` holds its :func:`ood.numerics.check_number` rule, ``override`` the help text of
    a field that a run may override (the train notebook's parameters, the command line's options and a torchrun
    launch's options are made from these fields: :data:`OVERRIDES`)."""
    meta = {k: v for k, v in (("check", check), ("override", override)) if v is not None}
    return field(default=default, metadata=meta, **kw) if "default_factory" not in kw else field(metadata=meta, **kw)


@dataclass
class TrainConfig:
    """Everything the training loop needs for one method; every field has a source in params.yaml.

    A stage builds it once (:func:`method_config`) and hands it down; a seed's run is ``dataclasses.replace(cfg,
    seed=s)``. The numeric fields' rules are in their metadata (``check``), and so is which of them a run may
    override (``override``)."""

    method: str
    terms: dict[str, dict] = field(default_factory=lambda: {"ce": {}})
    sampler: dict | None = None          # {"name": ..., **params}; None: random outliers (if any term needs them)
    init: str | None = None              # name of the method whose checkpoint this one fine-tunes from
    epochs: int = _knob(10, check=dict(low=0, integer=True, strict=True),
                        override="epochs (default: the method's recipe)")
    batch_size: int = _knob(128, check=dict(low=0, low_open=True, integer=True, strict=True),   # ID batch
                            override="ID batch, the global one under torchrun (default: the recipe's)")
    out_batch_size: int = _knob(0, check=dict(low=0, integer=True, strict=True))   # outlier batch (0: no outliers)
    # cap on an epoch's steps (a fresh random subset each epoch); None: a full pass
    steps_per_epoch: int | None = _knob(None, check=dict(low=0, low_open=True, integer=True, strict=True,
                                                         allow_none=True),
                                        override="cap on the steps of an epoch (default: the recipe's)")
    optimizer: str = "sgd"               # sgd (momentum, nesterov) | adam (Greg-OOD's ImageNet runs) | adamw
    lr: float = _knob(0.1, check=dict(low=0, low_open=True), override="learning rate (default: the recipe's)")
    momentum: float = _knob(0.9, check=dict(low=0, high=1, high_open=True))
    nesterov: bool = True
    weight_decay: float = _knob(5e-4, check=dict(low=0))
    schedule: str = "cosine"             # cosine | step | constant
    milestones: list[int] = field(default_factory=list)   # epochs at which step decays by gamma
    gamma: float = 0.1
    warmup_epochs: int = 0               # linear warm-up of the learning rate (0: none)
    augment: bool = True                 # random crop (zero padding crop_pad) + horizontal flip
    # padding of the ID images' random crop [paper: 4]; outliers keep 4 [code]
    crop_pad: int = _knob(4, check=dict(low=0, high=16, integer=True, strict=True))
    seed: int = 0
    amp: bool = True                     # bf16 autocast on CUDA (ignored on CPU)
    sync_batchnorm: bool = False         # under torchrun: BatchNorm statistics over all ranks (torch SyncBatchNorm)
    channels_last: bool | None = None    # None: auto (uses_channels_last); True/False force it
    nan_check_every: int = 0             # steps between NaN checks (0: every step on CPU, 50 on CUDA)

    def __post_init__(self):
        for f in fields(self):
            if "check" in f.metadata:
                check_number(getattr(self, f.name), repr(f.name), error=ParamError, **f.metadata["check"])
        c = lambda v, name, choices: check_choice(v, repr(name), choices, error=ParamError)
        c(self.optimizer, "optimizer", OPTIMIZERS)
        c(self.schedule, "schedule", ("cosine", "step", "constant"))
        c(self.sync_batchnorm, "sync_batchnorm", (True, False))
        c(self.channels_last, "channels_last", (None, True, False))   # None: auto (uses_channels_last)
        if not isinstance(self.terms, dict) or not self.terms:
            raise ParamError(f"method {self.method!r}: 'terms' must be a non-empty mapping of loss term -> parameters")


def uses_channels_last(cfg: TrainConfig, device) -> bool:
    """Whether training ``cfg`` on ``device`` keeps the network and its batches in channels_last memory format.

    ``cfg.channels_last`` True or False decides. None (the default) decides by measurement: always on CUDA
    (faster convolutions with bf16 autocast); on CPU only for methods without a gradient penalty, because the
    double backward through channels_last convolutions is slower there (the times: benchmarks/README.md,
    "Timings behind the code's choices").
    """
    if cfg.channels_last is not None:
        return cfg.channels_last
    if str(device).startswith("cuda"):
        return True
    return "grad_penalty" not in cfg.terms


_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}

#: The TrainConfig fields a run may override, in field order: the train notebook's parameters, the command line's
#: ``--<field>`` options and the options a torchrun launch passes on are these (``ood.run_train``, ``ood.__main__``).
OVERRIDES = tuple(f.name for f in fields(TrainConfig) if "override" in f.metadata)


def override_rule(name: str) -> dict:
    """The :func:`ood.numerics.check_number` rule of an overridable field (None allowed: "the recipe's")."""
    return {**next(f for f in fields(TrainConfig) if f.name == name).metadata["check"], "allow_none": True}


def override_help(name: str) -> str:
    """The help text of an overridable field (its ``--option`` on the command line)."""
    return next(f for f in fields(TrainConfig) if f.name == name).metadata["override"]


def method_config(params: dict, method: str, profile: str | None = None, **overrides) -> TrainConfig:
    """The effective :class:`TrainConfig` of ``method``: its composition (:data:`ood.methods.METHODS`: terms in
    order, sampler, starting checkpoint), its recipe, then the profile's keys for the method, then ``overrides``.

    The profile's ``method.<name>`` block gives only parameters: ``terms`` maps some of the composition's terms to
    their parameters (a term it leaves out takes its defaults), ``sampler`` the sampler's parameters, ``init: null``
    trains from scratch a method that otherwise fine-tunes; ``recipe`` defaults to ``finetune`` for a method with a
    starting checkpoint, ``scratch`` otherwise. ``overrides`` with value None are ignored (the notebooks pass their
    parameters that way); an override of ``terms`` or ``sampler`` replaces the composition's (the tour's ablations).
    """
    block = profile_params(params, profile)
    if method not in METHODS:
        raise ParamError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    comp = METHODS[method]
    spec = copy.deepcopy(block["method"].get(method) or {})
    if not isinstance(spec, dict):
        raise ParamError(f"method {method!r}: its block in profiles/{profile or params['profile']}.yaml must be a "
                         f"mapping (recipe, terms, sampler, ...), got {spec!r}")
    method_model(block, method)   # validates the method's model overrides
    spec.pop("model", None)
    terms = spec.pop("terms", None) or {}
    if not isinstance(terms, dict) or not all(isinstance(v, dict) or v is None for v in terms.values()):
        raise ParamError(f"method {method!r}: 'terms' must map its loss terms to their parameters, got {terms!r}")
    extra = [t for t in terms if t not in comp.terms]
    if extra:
        raise ParamError(f"method {method!r}: term(s) {', '.join(map(repr, extra))} not in its composition; allowed: "
                         f"{', '.join(comp.terms)} (ood.methods.METHODS; a profile gives only the terms' parameters)")
    spec["terms"] = {t: dict(terms.get(t) or {}) for t in comp.terms}
    sampler = spec.pop("sampler", None)
    if sampler is not None and (comp.sampler is None or not isinstance(sampler, dict) or "name" in sampler):
        raise ParamError(f"method {method!r}: 'sampler' gives the parameters of its sampler "
                         f"({comp.sampler or 'none: random outliers'}, ood.methods.METHODS), got {sampler!r}")
    spec["sampler"] = None if comp.sampler is None else {"name": comp.sampler, **(sampler or {})}
    spec.setdefault("init", comp.init)
    recipe_name = spec.pop("recipe", "scratch" if spec["init"] is None else "finetune")
    recipes = block["recipes"]
    if recipe_name not in recipes:
        raise ParamError(f"method {method!r}: unknown recipe {recipe_name!r}; allowed: {', '.join(recipes)}")
    merged: dict[str, Any] = copy.deepcopy(recipes[recipe_name])
    merged.update(spec)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    merged.setdefault("seed", params.get("seeds", [0])[0])
    unknown = sorted(set(merged) - _TRAIN_FIELDS)
    if unknown:
        raise ParamError(
            f"method {method!r}: unknown key(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(sorted(_TRAIN_FIELDS - {'method'}))}")
    return TrainConfig(method=method, **merged)


def method_model(block: dict, method: str) -> dict:
    """The ``model`` block ``method`` trains with: the profile's, updated by the method's own ``model: {...}``
    (:data:`MODEL_OVERRIDES` only; anything else raises :class:`ParamError`)."""
    model = dict(block["model"])
    over = (block["method"].get(method) or {}).get("model") or {}
    if not isinstance(over, dict):
        raise ParamError(f"method {method!r}: 'model' must be a mapping of {', '.join(MODEL_OVERRIDES)}, got {over!r}")
    bad = sorted(set(over) - set(MODEL_OVERRIDES))
    if bad:
        raise ParamError(f"method {method!r}: model key(s) {', '.join(bad)} cannot differ between the methods of a "
                         f"profile; allowed: {', '.join(MODEL_OVERRIDES)} (change the profile's model block instead)")
    model.update(over)
    return model


def model_spec(params: dict, profile: str | None = None, method: str | None = None) -> dict:
    """The network ``method`` trains (``ood.models.build_model`` arguments): the profile's ``model`` block with the
    method's own overrides (:func:`method_model`; None: the profile's block alone)."""
    block = profile_params(params, profile)
    m = method_model(block, method) if method else dict(block["model"])
    return {"name": m.pop("name"), "num_classes": block["benchmark"]["num_classes"], "mean": m.pop("mean"),
            "std": m.pop("std"), "kwargs": m}


def resolve_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ParamError(f"invalid value {device!r} for 'device'; allowed: auto, cpu, cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ParamError(f"device {device!r} requested but CUDA is not available here; allowed: auto, cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------
# Notebook parameters (papermill)
# ---------------------------------------------------------------------------------------------

def is_seed_list(v) -> bool:
    """A valid ``seeds`` value (params.yaml, notebook parameter): a non-empty list of distinct integers >= 0."""
    return (isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v))


# A notebook parameter's check: ``check(value, what)`` returns the value or raises ParamError with the one-line
# message of ood.numerics (``invalid value <v> for parameter '<name>'; allowed: ...``).
def _number(**limits) -> Callable[[Any, str], Any]:
    """A number in range (:func:`ood.numerics.check_number`'s keywords; integers are ``int``, not 3.0 or a bool)."""
    if limits.get("integer"):
        limits.setdefault("strict", True)
    return lambda v, what: check_number(v, what, error=ParamError, **limits)


def _choice(*choices) -> Callable[[Any, str], Any]:
    """One of ``choices`` (:func:`ood.numerics.check_choice`)."""
    return lambda v, what: check_choice(v, what, choices, error=ParamError)


def _rule(ok: Callable[[Any], bool], allowed: str, *, allow_none: bool = False) -> Callable[[Any, str], Any]:
    """A value ``ok`` accepts (or None with ``allow_none``), else the same one-line message with ``allowed``."""
    def check(v, what):
        if (v is None and allow_none) or (v is not None and ok(v)):
            return v
        raise ParamError(f"invalid value {v!r} for {what}; allowed: {allowed}{' or None' if allow_none else ''}")
    return check


_SEEDS = _rule(is_seed_list, "a non-empty list of distinct integers >= 0", allow_none=True)
_RUN_DIR = _rule(lambda v: isinstance(v, str) and v != "", "a path", allow_none=True)
# name -> check (None: checked against params.yaml in check_notebook_params: profile, method, scorer names).
_COMMON = {"profile": None, "device": _choice("auto", "cpu", "cuda")}
NOTEBOOK_SCHEMAS: dict[str, dict[str, Callable[[Any, str], Any] | None]] = {
    "data": {**_COMMON},
    "train": {
        **_COMMON,
        "method": None,
        **{name: _number(**override_rule(name)) for name in OVERRIDES},
        "seeds": _SEEDS,
        "run_dir": _RUN_DIR,
    },
    "evaluate": {
        **_COMMON,
        "method": None,
        "scorers": None,
        "seeds": _SEEDS,
        "run_dir": _RUN_DIR,
    },
    "tables": {**_COMMON},
    "figures": {**_COMMON, "n_show": _number(integer=True, low=0, low_open=True)},
    "tour": {
        **_COMMON,
        "use_pipeline_runs": _choice(True, False),
        "run_root": _rule(lambda v: isinstance(v, str) and v != "",
                          "a folder (relative to the repository root or absolute)"),
        "scratch_epochs": _number(integer=True, low=0, low_open=True, allow_none=True),
        "finetune_steps": _number(integer=True, low=0, low_open=True, allow_none=True),
        "bfm_ratio": _number(low=0, low_open=True, high=1, allow_none=True),
        "grad_weight": _number(low=0, allow_none=True),
        "n_show": _number(integer=True, low=0, low_open=True),
        "n_pick": _number(integer=True, low=2),
        "seed": _number(integer=True, low=0),
    },
    "ablations": {
        **_COMMON,
        "sweeps": _rule(lambda v: isinstance(v, dict) and len(v) > 0 and all(
            isinstance(k, str) and isinstance(m, list) and m and all(isinstance(x, str) for x in m)
            for k, m in v.items()), "a non-empty mapping sweep name -> list of methods to plot"),
        "log_x": _rule(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of sweep names"),
    },
}


@dataclass
class NotebookParams:
    notebook: str
    values: dict

    def overrides(self) -> dict:
        """The TrainConfig overrides among these parameters (:data:`OVERRIDES`; None: the recipe's value)."""
        return {k: v for k, v in self.values.items() if k in OVERRIDES}

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


def check_notebook_params(notebook: str, namespace: dict, before: Iterable[str], params: dict | None = None, *,
                          scorers: Iterable[str] | None = None) -> NotebookParams:
    """Validate a notebook's parameters after papermill injected its own.

    ``before`` is the set of global names that existed before the parameters cell; every new
    global must be a parameter of ``notebook`` (so a misspelled ``-p`` fails instead of being
    silently ignored, as papermill itself only warns). ``scorers``: the registered scorer names, for a notebook
    with a ``scorers`` parameter (the evaluate notebook passes ``ood.scorers.SCORERS``; this module does not import
    the scorers, so that the stages that do not score do not depend on them). Raises :class:`ParamError` (one line).
    """
    if notebook not in NOTEBOOK_SCHEMAS:
        raise ParamError(f"unknown notebook {notebook!r}; allowed: {', '.join(NOTEBOOK_SCHEMAS)}")
    schema = NOTEBOOK_SCHEMAS[notebook]
    new = [k for k in namespace if k not in set(before) and not k.startswith("_")]
    unknown = sorted(k for k in new if k not in schema)
    if unknown:
        raise ParamError(f"unknown parameter {unknown[0]!r} for notebook {notebook!r}; allowed: {', '.join(schema)}")
    missing = [k for k in schema if k not in namespace]
    if missing:
        raise ParamError(f"notebook {notebook!r} lacks parameter(s) {', '.join(missing)} in its parameters cell")
    values = {k: namespace[k] for k in schema}
    params = params if params is not None else load_params()
    allowed_profiles = profiles(params)
    if values["profile"] not in allowed_profiles:
        raise ParamError(f"invalid value {values['profile']!r} for parameter 'profile'; allowed: "
                         f"{', '.join(allowed_profiles)}")
    profile_params(params, values["profile"])   # the profile has its blocks
    for name, check in schema.items():
        v, what = values[name], f"parameter {name!r}"
        if name == "method":
            check_choice(v, what, list(METHODS), error=ParamError)
        elif name == "scorers" and v is not None:
            if not isinstance(v, list):
                raise ParamError(f"invalid value {v!r} for {what}; allowed: a list of scorer names or None")
            if scorers is None:
                raise ParamError(f"notebook {notebook!r} checks {what} against the registered scorers: pass "
                                 "scorers=list(ood.scorers.SCORERS)")
            for scorer in v:
                check_choice(scorer, f"an entry of {what}", list(scorers), error=ParamError)
        elif check is not None:
            check(v, what)
    return NotebookParams(notebook, values)
