r"""A detector a person can deploy: one trained network, one post-hoc scorer with its fitted state, and a threshold,
in one file that needs only ``ood`` to load (no params.yaml, no pipeline).

.. math:: \text{decision}(x) = \text{ID} \iff S(x) \ge t, \qquad t = s_{(m)},\ m = \lceil \mathrm{tpr} \cdot n_c \rceil

with :math:`S` the scorer's score (higher = more ID, ``ood.scorers``) and :math:`s_{(1)} \ge s_{(2)} \ge \dots` the
scores of the :math:`n_c` **calibration** ID images: the rule of :func:`ood.metrics.tpr_threshold`, the largest
threshold that accepts at least ``tpr`` of them (ties at :math:`t` count as ID).

Calibration (:func:`fit_detector`). The ID test images are split in two halves by a seeded permutation
(:func:`split_halves`): the calibration half sets :math:`t`, the held half reports the ID acceptance rate
(TPR) that :math:`t` achieves, with a 95 % Wilson score interval (:func:`wilson_interval`).

* Why a held half: on the images that chose it, :math:`t` accepts at least ``tpr`` by construction, an optimistic
  (biased) figure. On images that played no part in choosing it, the number accepted is a binomial draw with the
  rate :math:`t` really achieves, so its fraction is an unbiased estimate and its binomial interval is valid.
* Why half and half: a larger calibration half makes :math:`t` vary less between draws of the data (the achieved
  rate of an order-statistic threshold has a spread of about :math:`\sqrt{p(1-p)/n_c}`), a larger held half makes
  the reported interval narrower (spread :math:`\sqrt{p(1-p)/n_h}`). The sum of the two variances,
  :math:`p(1-p)(1/n_c + 1/n_h)` with :math:`n_c + n_h = n`, is smallest at :math:`n_c = n_h = n/2`; with an odd
  :math:`n` the calibration half has the extra image.
* Why Wilson, not Clopper-Pearson: the Wilson score interval (Wilson 1927) is closed-form (no beta quantiles, so no
  SciPy in the package), stays inside [0, 1], and its coverage is close to the nominal 95 % on average for the
  rates and sizes here (p near 0.95, a few hundred images), where the Wald interval undercovers. Clopper-Pearson
  guarantees at least 95 % for every p but is conservative (wider) by construction; a user who needs that guarantee
  can compute it from the stored counts (``calibration["held_accepted"]``, ``calibration["n_held"]``).

The file (:meth:`Detector.save`, one ``torch.save`` of plain tensors, numbers and dicts, written to a temporary file
and renamed) holds the model spec and state dict, the scorer's name, hyperparameters and fitted state
(``Scorer.state_dict``), the threshold, the tpr target, the achieved rates with their interval, the input spec and the
provenance (profile, method, training seed, checkpoint path and sha256).

This module is the detector alone: it imports the model, the scorers and the metrics, and no pipeline code (no
params file or profile, benchmark, data reader), so that a saved file loads and scores with ``ood`` alone
(``tests/test_detector_core.py`` loads one in a fresh process). Fitting on a run of a profile (its fit set and ID
test set) is :mod:`ood.detector_runs`; reading image files and writing rows for ``python -m ood detect`` is
:mod:`ood.cli_detect`.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ood.metrics import tpr_threshold
from ood.models import OODNet, build_from_spec
from ood.numerics import check_number, eval_mode
from ood.scorers import build_scorer, extract

__all__ = ["Detector", "DetectorError", "fit_detector", "run_info", "split_halves", "wilson_interval", "ood_rates",
           "FORMAT", "VERSION"]

#: What a detector file says it is (``blob["format"]``) and the version of its layout.
FORMAT = "ood-detector"
VERSION = 1

_BLOB_KEYS = ("format", "version", "model", "state_dict", "scorer", "threshold", "tpr", "calibration", "input",
              "provenance")


class DetectorError(ValueError):
    """A detector, its inputs or its file are not usable; the message is one line saying what and how to fix it."""


# ----------------------------------------------------------------------------------------------
# Calibration: the split and the interval
# ----------------------------------------------------------------------------------------------

def split_halves(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Disjoint calibration and held halves of ``range(n)``: ``perm = torch.randperm(n, generator=
    torch.Generator().manual_seed(seed))``, the first ``ceil(n / 2)`` entries calibrate, the rest are held; each
    half is returned sorted (int64, CPU). The same ``(n, seed)`` gives the same halves on any machine."""
    n = check_number(n, "the number of ID calibration images", low=2, integer=True)
    seed = check_number(seed, "the split seed", low=0, integer=True)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = (n + 1) // 2
    return perm[:k].sort().values, perm[k:].sort().values


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    r"""The Wilson score interval of a binomial proportion :math:`\hat p = k / n` (Wilson 1927):

    .. math:: \frac{\hat p + \frac{z^2}{2n} \pm z \sqrt{\frac{\hat p(1-\hat p)}{n} + \frac{z^2}{4n^2}}}{1 + z^2/n}

    with :math:`z` the :math:`(1 + \mathrm{confidence})/2` normal quantile (1.95996 for 95 %), i.e. the set of
    :math:`p` with :math:`|\hat p - p| \le z\sqrt{p(1-p)/n}`. Fractions in [0, 1]; see the module docstring for
    why Wilson."""
    n = check_number(n, "the number of trials", low=1, integer=True)
    k = check_number(k, "the number of successes", low=0, high=n, integer=True)
    check_number(confidence, "confidence", low=0, high=1, low_open=True, high_open=True)
    z = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # k = 0 and k = n give an endpoint of exactly 0 and 1 (the formula's rounding can miss it by an ulp)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))

# ----------------------------------------------------------------------------------------------
# Data in any of the package's forms
# ----------------------------------------------------------------------------------------------

def _data_sets():
    """``ood.data``'s ``(ArrayDataset, FolderDataset, Loader)`` when that package is loaded, else None. A data set
    of it exists only once it is loaded (by whoever built the set), so the detector never imports it (and its
    readers) itself: an image tensor is scored with ``ood`` alone."""
    data = sys.modules.get("ood.data")
    return None if data is None else (data.ArrayDataset, data.FolderDataset, data.Loader)


def _batches(data, batch_size: int, device) -> Iterable[tuple[Tensor, Tensor]]:
    """``(x float [0, 1], y int64)`` batches of an ``ArrayDataset`` / ``FolderDataset`` (``ood.data.Loader``), an
    ``(images, labels)`` pair, or an image tensor (labels -1); uint8 images are divided by 255."""
    sets = _data_sets()
    if sets is not None and isinstance(data, sets[:2]):
        yield from sets[2](data, batch_size, device=device)
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
    elif isinstance(data, Tensor):
        x, y = data, torch.full((data.shape[0],), -1, dtype=torch.int64)
    else:
        raise DetectorError(f"cannot read images from a {type(data).__name__}; allowed: an ood.data ArrayDataset or "
                            "FolderDataset, an (images, labels) pair of tensors, or an image tensor (N, 3, H, W)")
    if x.dim() != 4 or x.shape[1] != 3:
        raise DetectorError(f"images must be a tensor (N, 3, H, W), got shape {tuple(x.shape)}")
    for lo in range(0, x.shape[0], batch_size):
        xb = x[lo:lo + batch_size].to(device)
        xb = xb.float().div_(255) if xb.dtype == torch.uint8 else xb.float()
        yield xb, torch.as_tensor(y[lo:lo + batch_size]).to(device)


def _size_of(data) -> int:
    return int(data[0].shape[0]) if isinstance(data, (tuple, list)) else len(data)


def _fingerprint(data) -> str | None:
    fp = getattr(data, "fingerprint", None)
    return fp() if callable(fp) else None


# ----------------------------------------------------------------------------------------------
# The detector
# ----------------------------------------------------------------------------------------------

def _plain_state(model: OODNet) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass(eq=False)
class Detector:
    """A trained network, a fitted post-hoc scorer and a threshold (see the module docstring).

    ``calibration``: ``n_calib``, ``n_held``, ``calib_accepted``, ``held_accepted``, ``calib_rate``, ``held_rate``
    (fractions), ``held_interval`` ([low, high], fractions), ``interval`` (its name), ``split_seed``,
    ``calib_index`` / ``held_index`` (the ID-test rows of each half). ``input``: ``image_size``, ``resize``,
    ``channels``, ``filter``, ``crop``, ``range``, ``profile``, ``classes``. ``provenance``: ``profile``, ``method``,
    ``seed``, ``checkpoint``, ``checkpoint_sha256``, the data it was fitted and calibrated on, the ``ood`` version.

    Built by :func:`fit_detector` or :meth:`load`; building it builds the model and restores the scorer's fitted
    state, so a file whose state does not fit its scorer fails here with a :class:`DetectorError`.
    """

    model_spec: dict
    state_dict: dict[str, Tensor]
    scorer_name: str
    scorer_params: dict[str, Any]
    scorer_state: dict[str, Any]
    threshold: float
    tpr: float
    calibration: dict[str, Any] = field(default_factory=dict)
    input_spec: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self):
        try:
            self.scorer = build_scorer(self.scorer_name, **(self.scorer_params or {}))
            self.scorer.load_state_dict(dict(self.scorer_state))
        except (ValueError, TypeError) as e:
            raise DetectorError(str(e).splitlines()[0]) from None
        try:
            model = build_from_spec(self.model_spec)
            model.load_state_dict(self.state_dict)
        except (ValueError, TypeError, KeyError, RuntimeError) as e:
            raise DetectorError(f"the detector's model does not build from its spec {self.model_spec!r}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        self.model = model.to(self.device).eval()

    # -- the class names --------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        names = self.input_spec.get("classes")
        k = self.model.num_classes
        return list(names) if names and len(names) == k else [str(i) for i in range(k)]

    def to(self, device) -> "Detector":
        self.device = str(device)
        self.model.to(device)
        return self

    # -- scoring ----------------------------------------------------------------------------------
    def _outputs(self, data, batch_size: int) -> tuple[Tensor, Tensor]:
        """Scores ``(N,)`` and logits ``(N, K)`` on the CPU."""
        model, scorer = self.model, self.scorer
        scores, logits = [], []
        with eval_mode(model):
            for x, _ in _batches(data, batch_size, self.device):
                with torch.no_grad():
                    pen = model.pool(model.features(x))
                    lg = model.head(pen)
                    s = None if scorer.needs_network else scorer.score_features(pen, lg, model)
                if s is None:
                    s = scorer.score(model, x)
                scores.append(s.detach().float().cpu())
                logits.append(lg.detach().float().cpu())
        if not scores:
            raise DetectorError("no images to score; need at least one")
        return torch.cat(scores), torch.cat(logits)

    def scores(self, data, batch_size: int = 256) -> np.ndarray:
        """The scorer's scores (higher = more ID) of ``data`` (any form of :func:`fit_detector`), float32 numpy."""
        return self._outputs(data, batch_size)[0].numpy()

    def predict(self, images, batch_size: int = 256) -> list[dict[str, Any]]:
        """One row per image of ``images`` (a tensor ``(N, 3, H, W)``, float in [0, 1] or uint8, at the input size;
        or any form of :func:`fit_detector`): ``score``, ``threshold``, ``decision`` (``"in"`` when score >=
        threshold, else ``"out"``), ``predicted_class`` (name), ``class_index`` and ``probability`` (its softmax
        probability)."""
        if isinstance(images, Tensor) and tuple(images.shape[1:]) != self.input_shape:
            raise DetectorError(f"images of shape {tuple(images.shape)} do not match the detector's input "
                                f"(N, {', '.join(map(str, self.input_shape))}); prepare files with "
                                "ood.cli_detect.read_images")
        s, lg = self._outputs(images, batch_size)
        prob, idx = torch.softmax(lg.double(), dim=1).max(dim=1)
        names = self.classes
        return [{"score": float(si), "threshold": self.threshold, "decision": "in" if float(si) >= self.threshold
                 else "out", "predicted_class": names[int(ci)], "class_index": int(ci), "probability": float(pi)}
                for si, ci, pi in zip(s.tolist(), idx.tolist(), prob.tolist())]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        size = int(self.input_spec.get("image_size", 32))
        return int(self.input_spec.get("channels", 3)), size, size

    # -- the file ---------------------------------------------------------------------------------
    def to_blob(self) -> dict[str, Any]:
        """What :meth:`save` writes: plain tensors, numbers, strings, lists and dicts."""
        return {"format": FORMAT, "version": VERSION, "model": self.model_spec,
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
                "scorer": {"name": self.scorer_name, "params": dict(self.scorer_params),
                           "state": self.scorer.state_dict()},
                "threshold": float(self.threshold), "tpr": float(self.tpr), "calibration": self.calibration,
                "input": self.input_spec, "provenance": self.provenance}

    def save(self, path) -> Path:
        """Write the detector to ``path`` (one ``torch.save`` file; a temporary file in the same folder, then a rename,
        so a crash leaves no partial file). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(self.to_blob(), tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path, device="cpu") -> "Detector":
        """A detector written by :meth:`save` (``torch.load(weights_only=True)``: plain data only, no code runs).
        A missing file, a file that is not a detector, one of another layout version, or one whose scorer state or
        model do not load raise :class:`DetectorError` (FileNotFoundError for a missing file)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no detector file at {path}; write one with python -m ood fit-detector")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # an unpickling error, a truncated zip, a file of another kind
            raise DetectorError(f"{path} is not a detector file ({type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else 'unreadable'}); write one "
                                "with python -m ood fit-detector") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise DetectorError(f"{path} is not a detector file (no 'format: {FORMAT}' entry); write one with "
                                "python -m ood fit-detector")
        if blob.get("version") != VERSION:
            raise DetectorError(f"{path} is a detector file of layout version {blob.get('version')!r}; this ood "
                                f"reads version {VERSION}: fit it again with python -m ood fit-detector")
        missing = [k for k in _BLOB_KEYS if k not in blob]
        sc = blob.get("scorer")
        if not missing and (not isinstance(sc, dict) or any(k not in sc for k in ("name", "params", "state"))):
            missing = ["scorer.name/params/state"]
        if missing:
            raise DetectorError(f"{path} is an incomplete detector file (lacks {', '.join(missing)}); fit it again "
                                "with python -m ood fit-detector")
        return cls(model_spec=blob["model"], state_dict=blob["state_dict"], scorer_name=sc["name"],
                   scorer_params=sc["params"], scorer_state=sc["state"], threshold=float(blob["threshold"]),
                   tpr=float(blob["tpr"]), calibration=blob["calibration"], input_spec=blob["input"],
                   provenance=blob["provenance"], device=str(device))

    # -- what it is -------------------------------------------------------------------------------
    def summary(self) -> str:
        """Lines a person reads: the scorer and threshold, the rate on the calibration half, the held half's rate
        with its interval."""
        c, p = self.calibration, self.provenance
        lo, hi = c.get("held_interval", (float("nan"), float("nan")))
        src = ", ".join(f"{k} {p[k]}" for k in ("profile", "method", "seed") if p.get(k) is not None)
        hyper = "".join(f" {k}={v}" for k, v in (self.scorer_params or {}).items())
        return "\n".join([
            f"detector: {self.scorer_name}{hyper}" + (f" ({src})" if src else ""),
            f"threshold {self.threshold:.6g} (score >= threshold is ID): accepts {100 * c['calib_rate']:.2f}% of the "
            f"calibration half ({c['calib_accepted']} of {c['n_calib']} ID-test images; target {100 * self.tpr:g}%)",
            f"held-out ID rate (TPR) {100 * c['held_rate']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] ({c['interval']}, "
            f"{c['held_accepted']} of {c['n_held']} held-out ID-test images)",
        ])

    def __repr__(self) -> str:
        return (f"Detector({self.scorer_name}, threshold={self.threshold:.6g}, tpr={self.tpr}, "
                f"held_rate={self.calibration.get('held_rate')}, profile={self.input_spec.get('profile')!r})")

def fit_detector(source, scorer: str = "energy", scorer_params: dict | None = None, id_fit=None, id_calib=None, *,
                 tpr: float = 0.95, seed: int = 0, device="cpu", batch_size: int = 256, model_spec: dict | None = None,
                 profile: str | None = None, method: str | None = None, classes: Sequence[str] | None = None,
                 resize: int | None = None, provenance: dict | None = None) -> Detector:
    """Fit a :class:`Detector` (module docstring: the threshold rule, the split, the interval).

    ``source``: a run folder (its ``model.pt``, as ``ood.models.load_model`` reads it; the checkpoint's model spec,
    method and seed and the file's sha256 go into the provenance) or an :class:`~ood.models.OODNet` with its
    ``model_spec`` (``ood.config.model_spec``). ``scorer``/``scorer_params``: a registered scorer
    (``ood.scorers.build_scorer``). ``id_fit``: the ID-train images the scorer fits its statistics on (with labels;
    ``ood.benchmark.fit_set`` gives the pipeline's), needed only when the scorer ``needs_fit``. ``id_calib``: ID test
    images, split by :func:`split_halves` with ``seed``. Both: an ``ood.data`` ArrayDataset / FolderDataset, an
    ``(images, labels)`` pair or an image tensor, float in [0, 1] or uint8, prepared as the profile's test images.
    ``classes``: class names (default: those of ``id_fit`` / ``id_calib``); ``resize``: the shorter side before the
    centre crop for files of another size (default: the set's, or the image size).
    """
    tpr = check_number(tpr, "tpr", low=0, high=1, low_open=True)
    if id_calib is None:
        raise DetectorError("id_calib: the ID test images that set and check the threshold are required")
    built = build_scorer(scorer, **(scorer_params or {}))   # unknown names and parameters fail before any work
    hyper = dict(built.params)   # as asked, before fitting (ReAct's fit writes its threshold parameter)
    prov = dict(provenance or {})
    if isinstance(source, OODNet):
        if model_spec is None:
            raise DetectorError("a model given as an OODNet needs its model_spec (ood.config.model_spec), so that the "
                                "file can rebuild it; or pass the run folder")
        spec, state = model_spec, _plain_state(source)
    else:
        info = run_info(source)
        spec, state = info["spec"], info["state_dict"]
        method = method or info["method"]
        prov.update({"checkpoint": str(info["checkpoint"]), "checkpoint_sha256": info["sha256"],
                     "seed": info["seed"]})
    prov.update({"profile": profile, "method": method})
    prov.setdefault("seed", None)
    n = _size_of(id_calib)
    calib_idx, held_idx = split_halves(n, seed)
    sets = _data_sets()
    if sets is not None and isinstance(id_calib, sets[1]):
        size, set_resize = int(id_calib.image_size), int(id_calib.resize)
    else:
        images = id_calib.images if sets is not None and isinstance(id_calib, sets[0]) else (
            id_calib if isinstance(id_calib, Tensor) else id_calib[0])
        size = set_resize = int(images.shape[-1])
    names = classes or getattr(id_fit, "classes", None) or getattr(id_calib, "classes", None)
    input_spec = {"image_size": size, "resize": int(resize or set_resize), "channels": 3,
                  "filter": "bilinear", "crop": "centre", "range": [0.0, 1.0], "profile": profile,
                  "classes": list(names) if names else None}
    if built.needs_fit:
        if id_fit is None:
            raise DetectorError(f"scorer {scorer!r} fits statistics on ID-train features: pass id_fit")
        model = build_from_spec(spec)
        model.load_state_dict(state)
        model = model.to(device).eval()
        pen, logits, labels = extract(model, _batches(id_fit, batch_size, device))
        built.fit_features(pen, logits, labels, model)
        del model, pen, logits, labels
    # the detector as it will be loaded (model rebuilt from spec and state, scorer from its saved state), so the
    # calibration scores below are the scores predict() gives
    det = Detector(spec, state, scorer, hyper, built.state_dict(), float("nan"), float(tpr),
                   input_spec=input_spec, device=str(device))
    scores = det.scores(id_calib, batch_size).astype(np.float64)
    s_cal, s_held = scores[calib_idx.numpy()], scores[held_idx.numpy()]
    det.threshold = tpr_threshold(s_cal, tpr)
    k_cal, k_held = int((s_cal >= det.threshold).sum()), int((s_held >= det.threshold).sum())
    lo, hi = wilson_interval(k_held, len(s_held))
    det.calibration = {"n_calib": len(s_cal), "n_held": len(s_held), "calib_accepted": k_cal,
                       "held_accepted": k_held, "calib_rate": k_cal / len(s_cal), "held_rate": k_held / len(s_held),
                       "held_interval": [lo, hi], "interval": "Wilson score 95%", "split_seed": int(seed),
                       "calib_index": calib_idx, "held_index": held_idx}
    import ood

    prov.update({"id_fit": getattr(id_fit, "name", None), "id_fit_n": None if id_fit is None else _size_of(id_fit),
                 "id_fit_fingerprint": _fingerprint(id_fit), "id_calib": getattr(id_calib, "name", None),
                 "id_calib_n": n, "id_calib_fingerprint": _fingerprint(id_calib), "ood_version": ood.__version__})
    det.provenance = prov
    return det


def ood_rates(det: Detector, ood_sets: dict, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Per OOD set, the fraction accepted as ID at the detector's threshold (its FPR, ID positive):
    ``{"fpr": percent, "accepted": count, "n": size}``."""
    out = {}
    for name, ds in ood_sets.items():
        s = det.scores(ds, batch_size).astype(np.float64)
        k = int((s >= det.threshold).sum())
        out[name] = {"fpr": 100.0 * k / len(s), "accepted": k, "n": len(s)}
    return out


# ----------------------------------------------------------------------------------------------
# A run folder's checkpoint
# ----------------------------------------------------------------------------------------------

def run_info(run_dir) -> dict[str, Any]:
    """What a run folder's ``model.pt`` and its path say: ``checkpoint`` (path), ``sha256``, ``spec``,
    ``state_dict``, ``meta``, ``method`` (the checkpoint's, else the folder name), ``seed`` (the checkpoint's
    configuration, else the folder name), and ``profile_in_path``: the ``<profile>`` of a path
    ``.../<profile>/<method>/seeds/<seed>`` (or ``.../<profile>/<method>``), which the caller checks against the
    profiles it knows."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"no trained model at {ckpt}; --run names a seed's run folder, e.g. "
                                "runs/synthetic/ce/seeds/0 (train it first: dvc repro or python -m ood train)")
    data = ckpt.read_bytes()
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        spec, state = blob["model"], blob["state_dict"]
    except Exception as e:
        raise DetectorError(f"{ckpt} is not a checkpoint of ood.train ({type(e).__name__}); it needs 'model' (the "
                            "spec) and 'state_dict'") from None
    meta = blob.get("meta", {}) or {}
    seeded = run_dir.parent.name == "seeds"
    method_dir = run_dir.parent.parent if seeded else run_dir
    folder_seed = run_dir.name.removeprefix("seed") if seeded else ""
    seed = (meta.get("config") or {}).get("seed")
    if seed is None and folder_seed.isdigit():
        seed = int(folder_seed)
    return {"checkpoint": ckpt, "sha256": hashlib.sha256(data).hexdigest(), "spec": spec, "state_dict": state,
            "meta": meta, "method": meta.get("method") or method_dir.name, "seed": seed,
            "profile_in_path": method_dir.parent.name}
