r"""The scorers' contract, the feature extraction they run off, and the registry.

Contract (OpenOOD's ``setup``/``postprocess`` split, pytorch-ood's pure functions):

* a :class:`Scorer` has ``name``, ``needs_fit`` (statistics from ID-train), ``needs_network`` (True
  only for ODIN, which re-runs the network on a perturbed input), ``fit_features(train_pen,
  train_logits, train_labels, model)``, ``score_features(pen, logits, model)`` on cached features,
  and the conveniences ``fit(model, id_train_loader)`` and ``score(model, x)``;
* ``state_dict()`` returns a scorer's hyperparameters and fitted statistics as plain tensors and numbers, and
  ``load_state_dict(state)`` restores them (checking the attributes of ``fit_state`` that scoring needs), so that a
  fitted scorer travels in one file (``ood.detector``);
* :func:`extract` collects ``(pen, logits, labels)`` of a loader once, so that every scorer runs off
  cached features (``ood.evaluate``);
* a scorer registers itself once, with the class decorator :func:`register`: :data:`SCORERS` (name -> class)
  and :data:`DEFAULTS` (name -> the keyword arguments of its ``__init__`` with their defaults) are built from the
  registrations, and :func:`formula_table` from the classes' ``formula`` and ``source``;
* :func:`build_scorer` builds one by name with checked parameters. Scorer hyperparameters are fixed at their
  defaults (the papers' protocol, each class docstring says where a default comes from); none is tuned on the OOD
  test sets.

Everything is batched (no Python loop over samples) and runs on the device of its input.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from ood.models import OODNet
from ood.numerics import check_choice, check_number, eval_mode, wide

__all__ = ["Scorer", "extract", "forward_parts", "check_param", "check_flag", "head_weights", "percentile_of",
           "register", "SCORERS", "DEFAULTS", "build_scorer", "profile_scorers", "formula_table"]


# ----------------------------------------------------------------------------------------------
# Parameter checks and feature extraction
# ----------------------------------------------------------------------------------------------

def check_param(name: str, key: str, v, **rule):
    """A scorer parameter checked by ``ood.numerics.check_number``."""
    return check_number(v, f"parameter {key!r} of scorer {name!r}", **rule)


def check_flag(name: str, key: str, v) -> bool:
    """A boolean scorer parameter (``True`` or ``False``, not 0 / 1)."""
    return check_choice(v, f"parameter {key!r} of scorer {name!r}", (True, False))


def forward_parts(model: OODNet, x: Tensor) -> tuple[Tensor, Tensor]:
    """Penultimate features ``pool(features(x))`` and logits ``head`` of them, as :func:`extract` computes them."""
    fmap = model.features(x)
    pen = model.pool(fmap)
    return pen, model.head(pen)


def extract(model: OODNet, loader: Iterable, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """Penultimate features, logits and labels of every batch of ``loader``.

    ``loader`` yields ``(x, y)`` with ``x`` float in [0, 1]; batches are moved to ``device`` when given.
    Runs ``fmap = model.features(x); pen = model.pool(fmap); logits = model.head(pen)`` under
    ``torch.no_grad()`` in eval mode (the model's training flag is restored afterwards) and concatenates
    on the device the batches were computed on. Returns ``pen (N, D)``, ``logits (N, K)``, ``labels (N,)``.
    """
    pens, logits, labels = [], [], []
    with eval_mode(model), torch.no_grad():
        for x, y in loader:
            if device is not None:
                x, y = x.to(device), y.to(device)
            pen, lg = forward_parts(model, x)
            pens.append(pen)
            logits.append(lg)
            labels.append(torch.as_tensor(y).to(pen.device))
    if not pens:
        raise ValueError("the loader yielded no batches; need at least one (x, y) batch")
    return torch.cat(pens), torch.cat(logits), torch.cat(labels)


# ----------------------------------------------------------------------------------------------
# The contract
# ----------------------------------------------------------------------------------------------

class Scorer:
    """Base class of every post-hoc scorer (see the module docstring for the contract).

    Subclasses set ``name``, ``formula``, ``source``, ``needs_fit``, ``needs_network`` and implement
    :meth:`score_features` (and :meth:`fit_features` when ``needs_fit``). Hyperparameters are keyword arguments of
    ``__init__`` with their defaults, stored as attributes under the same names; :meth:`defaults` reads them from
    the signature and :attr:`params` gives their values. The docstring states the formula (``.. math::``), the paper
    (and the equation or table) it follows, and where each default comes from.
    """

    name: str = ""
    #: One line of the formula table (reST, ``:math:`` roles) and the paper it follows, e.g. ``"Sun et al. 2022"``.
    formula: str = ""
    source: str = ""
    needs_fit: bool = False
    needs_network: bool = False
    #: Its place in :data:`SCORERS` (so in every table and results file), set by :func:`register`.
    order: int = 0

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The hyperparameters and their defaults, in order: the keyword arguments of ``__init__`` (none when the
        class has no ``__init__`` of its own or inherited)."""
        if cls.__init__ is object.__init__:
            return {}
        return {p.name: p.default for p in list(inspect.signature(cls.__init__).parameters.values())[1:]}

    @property
    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.defaults()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # -- fitting ------------------------------------------------------------------------------
    def fit_features(self, train_pen: Tensor, train_logits: Tensor, train_labels: Tensor, model: OODNet) -> "Scorer":
        """Fit statistics from cached ID-train penultimate features ``(N, D)``, logits ``(N, K)`` and labels
        ``(N,)``; ``model`` gives ``model.fc``. Default: nothing to fit."""
        return self

    def fit(self, model: OODNet, id_train_loader: Iterable, device=None) -> "Scorer":
        """Convenience: :func:`extract` the ID-train loader, then :meth:`fit_features` (no-op if not needed)."""
        if not self.needs_fit:
            return self
        pen, logits, labels = extract(model, id_train_loader, device=device)
        return self.fit_features(pen, logits, labels, model)

    # -- saving and restoring a fitted scorer --------------------------------------------------
    #: The attributes :meth:`fit_features` sets: the fitted state a saved scorer must carry to score again
    #: (``tests/test_detector.py`` checks, for every registered scorer, that fitting sets no attribute outside it).
    fit_state: tuple[str, ...] = ()

    def required_state(self) -> tuple[str, ...]:
        """The attributes of :attr:`fit_state` that scoring needs with these hyperparameters (default: all of them)."""
        return self.fit_state

    def state_dict(self) -> dict[str, Any]:
        """Every instance attribute, hyperparameters and fitted statistics alike, as plain values: tensors (detached
        CPU copies), numpy arrays (as tensors), numbers, booleans, strings, None, and lists/tuples of these (as
        lists). Loadable with ``torch.load(..., weights_only=True)``; :meth:`load_state_dict` restores it. An
        attribute of another type raises TypeError (nothing is dropped silently)."""
        import numpy as np

        def plain(key, v):
            if isinstance(v, Tensor):
                return v.detach().to("cpu", copy=True)
            if isinstance(v, np.ndarray):
                return torch.from_numpy(v.copy())
            if v is None or isinstance(v, (bool, int, float, str)):
                return v
            if isinstance(v, (list, tuple)):
                return [plain(key, e) for e in v]
            raise TypeError(f"attribute {key!r} of scorer {self.name!r} is a {type(v).__name__}, which a saved state "
                            "cannot hold; allowed: tensors, arrays, numbers, booleans, strings, None and lists")

        return {k: plain(k, v) for k, v in vars(self).items()}

    def load_state_dict(self, state: dict[str, Any]) -> "Scorer":
        """Restore what :meth:`state_dict` returned into this scorer (built with the same hyperparameters, e.g. by
        :func:`build_scorer`). ValueError, one line, when the state names an attribute this scorer does not have,
        was saved with other hyperparameters, or lacks a fitted attribute that scoring needs
        (:meth:`required_state`; e.g. a file written before the scorer was fitted, or edited)."""
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise ValueError(f"the saved state of scorer {self.name!r} must be a mapping of attribute names, got "
                             f"{type(state).__name__}")
        known = set(vars(self)) | set(self.fit_state)
        unknown = sorted(set(state) - known)
        if unknown:
            raise ValueError(f"the saved state of scorer {self.name!r} has attributes it does not know: "
                             f"{', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        for k, v in self.params.items():
            if k in state and k not in self.fit_state and state[k] != v:
                raise ValueError(f"the saved state of scorer {self.name!r} was fitted with {k}={state[k]!r}, but "
                                 f"this scorer has {k}={v!r}")
        for k, v in state.items():
            setattr(self, k, v)
        missing = [k for k in self.required_state() if getattr(self, k, None) is None]
        if missing:
            raise ValueError(f"scorer {self.name!r} needs its fitted state ({', '.join(self.required_state())}), "
                             f"but the saved state lacks {', '.join(missing)}; fit it again on ID-train features")
        return self

    def _check_fitted(self, *attrs: str) -> None:
        if any(getattr(self, a, None) is None for a in attrs):
            raise RuntimeError(f"scorer {self.name!r} is not fitted; call fit(model, id_train_loader) or "
                               f"fit_features(train_pen, train_logits, train_labels, model) first")

    # -- scoring ------------------------------------------------------------------------------
    def score_features(self, pen: Tensor, logits: Tensor, model: OODNet) -> Tensor:  # pragma: no cover - abstract
        """Scores ``(B,)`` from penultimate features ``(B, D)`` and logits ``(B, K)``; higher = more ID."""
        raise NotImplementedError

    def score(self, model: OODNet, x: Tensor) -> Tensor:
        """Convenience: run the network on ``x`` (float in [0, 1]) in eval mode without gradients, then
        :meth:`score_features`."""
        with eval_mode(model), torch.no_grad():
            pen, logits = forward_parts(model, x)
            return self.score_features(pen, logits, model)


# ----------------------------------------------------------------------------------------------
# Helpers the families share
# ----------------------------------------------------------------------------------------------

def head_weights(model: OODNet, device, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """``model.fc`` weight ``(K, D)`` and bias ``(K,)`` (zeros when the head has no bias), detached."""
    w = model.fc.weight.detach().to(device=device, dtype=dtype)
    b = model.fc.bias
    b = torch.zeros(w.shape[0], device=device, dtype=dtype) if b is None else b.detach().to(device=device, dtype=dtype)
    return w, b


def percentile_of(x: Tensor, q: float) -> float:
    """``np.percentile(x, q)`` (linear interpolation) of all entries of ``x``, via ``torch.kthvalue`` on the
    tensor's device (no size limit, unlike ``torch.quantile``)."""
    flat = wide(x.detach().reshape(-1))
    n = flat.numel()
    pos = q / 100.0 * (n - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    v_lo = float(flat.kthvalue(lo + 1).values)
    v_hi = v_lo if hi == lo else float(flat.kthvalue(hi + 1).values)
    return v_lo + (pos - lo) * (v_hi - v_lo)


# ----------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------

#: Every registered scorer, name -> class, in the order of their ``order`` (the order of every table and results
#: file); filled by :func:`register` as the family modules are imported.
SCORERS: dict[str, type[Scorer]] = {}
#: name -> the keyword arguments of its ``__init__`` with their defaults (:meth:`Scorer.defaults`).
DEFAULTS: dict[str, dict[str, Any]] = {}


def register(order: int) -> Callable[[type[Scorer]], type[Scorer]]:
    """Class decorator: add a scorer to :data:`SCORERS` (at its place ``order``) and its defaults to
    :data:`DEFAULTS`, ``@register(order=21)`` above ``class MyScorer(Scorer):``.

    The class must state its own ``name``, ``formula`` and ``source``, and every ``__init__`` parameter needs a
    default (they are its hyperparameters). ``order``: a positive integer no other scorer has; the twenty scorers of
    the first results hold 1 to 20, so a new one takes the next free number. A clash raises ValueError naming both."""
    def add(cls: type[Scorer]) -> type[Scorer]:
        name = vars(cls).get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"scorer class {cls.__name__} must set its own name to register")
        lacking = [a for a in ("formula", "source") if not vars(cls).get(a)]
        if lacking:
            raise ValueError(f"scorer {name!r} must state its own {' and '.join(lacking)} (a line of the formula "
                             "table) to register")
        if name in SCORERS:
            raise ValueError(f"scorer {name!r} is registered twice ({SCORERS[name].__name__} and {cls.__name__})")
        taken = {c.order: n for n, c in SCORERS.items()}
        if isinstance(order, bool) or not isinstance(order, int) or order < 1 or order in taken:
            nxt = max(taken, default=0) + 1
            raise ValueError(f"invalid value {order!r} for the order of scorer {name!r}"
                             f"{f' (taken by {taken[order]!r})' if order in taken else ''}; allowed: a positive "
                             f"integer no other scorer has, e.g. {nxt}")
        if cls.__init__ is not object.__init__:
            for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
                if p.default is p.empty or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    raise ValueError(f"scorer {name!r}: the parameter {p.name!r} of __init__ must be a keyword "
                                     "argument with a default (its hyperparameters are read from them)")
        cls.order = order
        ranked = sorted([*SCORERS.values(), cls], key=lambda c: c.order)
        SCORERS.clear()
        SCORERS.update((c.name, c) for c in ranked)
        DEFAULTS.clear()
        DEFAULTS.update((c.name, c.defaults()) for c in ranked)
        return cls
    return add


def formula_table() -> str:
    """Every registered scorer as a reST table: name, score (higher = more ID), source, in :data:`SCORERS` order,
    built from the classes' ``name``, ``formula`` and ``source`` (the package docstring ends with it)."""
    rows = [("name", "score (higher = more ID)", "source")]
    rows += [(f"``{name}``", cls.formula, cls.source) for name, cls in SCORERS.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    rule = "  ".join("=" * w for w in widths)
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])


def build_scorer(name: str, **params) -> Scorer:
    """Build a registered scorer with its defaults overridden by ``params``.

    Unknown names or parameters raise a ValueError that lists the allowed ones; bad values raise a
    ValueError naming the value and the allowed range.
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; allowed: {', '.join(SCORERS)}")
    allowed = DEFAULTS[name]
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for scorer {name!r}; allowed: "
                         f"{', '.join(allowed) if allowed else '(none)'}")
    return SCORERS[name](**{**allowed, **params})


def profile_scorers(block: dict) -> list[str]:
    """The scorers a profile's pipeline runs: its ``evaluate.scorers`` list when it narrows it, else every registered
    scorer (in :data:`SCORERS` order). An unknown name raises ValueError listing the allowed ones."""
    names = (block.get("evaluate") or {}).get("scorers")
    if names is None:
        return list(SCORERS)
    for n in names:
        check_choice(n, "a scorer of the profile's evaluate.scorers", list(SCORERS))
    return list(names)
