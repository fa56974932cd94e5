"""The numbers the papers report, with where each one comes from, for side-by-side tables.

The data live in ``ood/reference.csv``, one number per row, columns (in this order)::

    paper, source, table, page, benchmark, id_dataset, model, train_method, scorer,
    ood_set, metric, value, confidence, note, protocol

Provenance rules
----------------
* **Never an invented number.** A value is copied from a source someone can open: ``source`` is
  a URL (paper, code repository README or figure, pinned to a commit where possible) or
  ``"paper Table N, p. M"``. ``table``/``page`` say where inside it, when known.
* ``confidence`` says how sure we are:

  - ``verified``: read by us in the primary source (the paper's table, or the authors' own README
    or README figure) and copied as printed;
  - ``secondary``: taken from a summary of the paper, not yet checked against its tables;
  - ``unverified``: anything else. A row may have an empty ``value`` only when it is
    ``unverified`` and its note says ``"no table available yet"`` (placeholder for a paper whose
    tables we could not read; it never shows up as a number).
* Values are percentages (0-100). FPR95 is the FPR on OOD at 95% TPR on ID (ID positive), as in
  both papers. A printed value that disagrees with the rest of its table is kept *as printed*
  and the disagreement is written in ``note``.

Vocabulary
----------
* ``benchmark``: ``cifar10, cifar100, imagenet, imagenet10, imagenet20`` (``imagenet10/20`` are the
  GReg class subsets listed in ``ood/imagenet_subsets.yaml``).
* ``ood_set``: our dataset names. CIFAR: ``svhn, textures, places365, lsun-c, lsun-r, isun,
  average``; ImageNet: ``inaturalist, sun, places, imagenet-textures, average``. ``none`` is used
  only with ``metric == "id_accuracy"``.
* ``metric``: ``fpr95, auroc, aupr_in, aupr_out, id_accuracy``.
* ``protocol``: how the number was measured, a key of :data:`PROTOCOLS`. Two papers' numbers for the "same"
  method can differ by the protocol alone (Energy-OE, WRN-40-2, CIFAR-10, average FPR95: 3.32 in the Energy README,
  13.11 in GReg), so :func:`side_by_side` pairs our numbers only with references of our protocol
  (:data:`OUR_PROTOCOL`).
* ``model``: ``wrn40_2`` (WRN-40-2), ``densenet101`` (DenseNet-BC, depth 100, growth 12, which both
  DOS and GReg call "DenseNet-101"), ``resnet18`` (the CIFAR variant, 3x3 stem), ``resnet18_tv``
  (torchvision's ImageNet ResNet-18, 7x7 stem and max-pool: what GReg's CIFAR scripts train as ``resnet18``),
  ``densenet121``; ``unstated`` when the source does not say.

Name mapping (paper row -> our keys)
------------------------------------
Our tidy ``metrics.csv`` has a ``method`` column (the **training** method) and a ``scorer`` column
(the **post-hoc score**); a paper's table row mixes the two. The mapping, encoded in
:data:`PAPER_ROWS`, is:

* MSP / Softmax score -> ``ce`` + ``msp``
* ODIN -> ``ce`` + ``odin``; Mahalanobis / Maha -> ``ce`` + ``mahalanobis``
* Energy score -> ``ce`` + ``energy``; ReAct / DICE -> ``ce`` + ``react`` / ``dice``
* OE (Outlier Exposure; Energy README "Softmax score with fine-tune") -> ``oe`` + ``msp``
* Energy-OE (Energy README "Energy score with fine-tune"; DOS "Energy_loss") -> ``energy_oe`` + ``energy``
* GReg / GReg+ -> ``greg`` / ``greg_plus`` + ``energy``
* DOS -> ``dos`` + ``abs`` (its absent-category score)
* BFM -> ``bfm`` + any post-hoc scorer

Two more conventions: a ``_inrc`` suffix on ``train_method`` (DOS Table 1) means the method was
trained with ImageNet-RC auxiliary outliers instead of the default TI-300K (our "300K random
images"); ``_grad`` (GReg's "+Grad" ablation) means that training loss plus the GReg gradient
penalty. ``scorer == "own"`` marks a method scored with its own OOD score that the table does not
name. :data:`METHOD_ALIASES` and :data:`SCORER_ALIASES` turn other spellings of our own method and
scorer names (``"Energy-OE"``, ``"softmax"``, ``"GReg+"``...) into these keys.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from ood.numerics import check_choice

__all__ = [
    "COLUMNS",
    "BENCHMARKS",
    "METRICS",
    "CONFIDENCE",
    "OOD_SETS",
    "PAPER_ROWS",
    "METHOD_ALIASES",
    "SCORER_ALIASES",
    "NOT_RUN",
    "load_reference",
    "reference_for",
    "normalize_ours",
    "side_by_side",
    "for_profile",
    "PROTOCOLS",
    "OUR_PROTOCOL",
    "to_markdown",
]

REFERENCE_CSV = Path(__file__).with_name("reference.csv")

COLUMNS: tuple[str, ...] = (
    "paper", "source", "table", "page", "benchmark", "id_dataset", "model", "train_method",
    "scorer", "ood_set", "metric", "value", "confidence", "note", "protocol",
)
#: Evaluation protocols of the reference numbers (the ``protocol`` column).
PROTOCOLS: dict[str, str] = {
    "energy-readme": "Energy-OE code (wetliu/energy_ood CIFAR/test.py, run.sh): 2,000 images of each OOD set, "
                     "averaged over 10 random draws (--num_to_avg 10); LSUN-C fed uncropped at 36 px; FPR95 at the "
                     "recall closest to 95% (fpr_and_fdr_at_recall)",
    "greg-detect": "Greg-OOD detect.py: every image of each OOD set, one pass; LSUN-C center-cropped to 32 px",
    "dos-paper": "the DOS paper's own evaluation (its Table 1); not compared with the code here",
    "bfm-paper": "the BFM paper's own evaluation; its tables could not be read here",
}
#: The default protocol of ``ood.evaluate``: full OOD sets, one pass, FPR95 at TPR >= 95% (``ood.metrics.fpr_at_tpr``);
#: a profile's ``evaluate.protocol: energy-readme`` evaluates the Energy code's way (``ood.evaluate.PROTOCOLS``).
OUR_PROTOCOL = "greg-detect"
BENCHMARKS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet", "imagenet10", "imagenet20")
METRICS: tuple[str, ...] = ("fpr95", "auroc", "aupr_in", "aupr_out", "id_accuracy")
CONFIDENCE: tuple[str, ...] = ("verified", "secondary", "unverified")
_CIFAR_SETS = ("svhn", "textures", "places365", "lsun-c", "lsun-r", "isun", "average")
_IMAGENET_SETS = ("inaturalist", "sun", "places", "imagenet-textures", "average")
OOD_SETS: dict[str, tuple[str, ...]] = {
    "cifar10": _CIFAR_SETS,
    "cifar100": _CIFAR_SETS,
    "imagenet": _IMAGENET_SETS,
    "imagenet10": _IMAGENET_SETS,
    "imagenet20": _IMAGENET_SETS,
}
NO_OOD_SET = "none"  # only for metric == "id_accuracy"
PLACEHOLDER_NOTE = "no table available yet"
NOT_RUN = "not run"

#: Paper row label (lower-cased) -> (train_method, scorer). See the module docstring.
PAPER_ROWS: dict[str, tuple[str, str]] = {
    "msp": ("ce", "msp"),
    "softmax score": ("ce", "msp"),
    "odin": ("ce", "odin"),
    "mahalanobis": ("ce", "mahalanobis"),
    "maha": ("ce", "mahalanobis"),
    "energy score": ("ce", "energy"),
    "energy_score": ("ce", "energy"),
    "react": ("ce", "react"),
    "dice": ("ce", "dice"),
    "oe": ("oe", "msp"),
    "outlier exposure": ("oe", "msp"),
    "softmax score with fine-tune": ("oe", "msp"),
    "energy-oe": ("energy_oe", "energy"),
    "energy score with fine-tune": ("energy_oe", "energy"),
    "energy_loss": ("energy_oe", "energy"),
    "greg": ("greg", "energy"),
    "greg+": ("greg_plus", "energy"),
    "dos": ("dos", "abs"),
}

#: Other spellings of a training method -> our ``train_method`` key.
METHOD_ALIASES: dict[str, str] = {
    "baseline": "ce", "standard": "ce", "cross_entropy": "ce", "cross-entropy": "ce",
    "outlier_exposure": "oe", "outlier-exposure": "oe",
    "energy-oe": "energy_oe", "energyoe": "energy_oe", "energy_ft": "energy_oe", "energy_loss": "energy_oe",
    "greg+": "greg_plus", "gregplus": "greg_plus", "greg-plus": "greg_plus",
}
#: Other spellings of a scorer -> our ``scorer`` key.
SCORER_ALIASES: dict[str, str] = {
    "softmax": "msp", "maxsoftmax": "msp", "max_softmax": "msp",
    "maha": "mahalanobis", "energy_score": "energy",
}

_SOURCE_RE = re.compile(r"^(https?://\S+|paper Table \S+, p\. \S+)$")
_OURS_METRIC_COLUMNS = ("fpr95", "auroc", "aupr_in", "aupr_out")


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """Read and validate the reference table (default: ``ood/reference.csv``).

    Checks, each failing with a one-line ``ValueError`` naming the bad row and value: the exact
    column list; ``benchmark``/``metric``/``confidence``/``protocol`` in their vocabularies; ``ood_set`` in the
    benchmark's vocabulary (``none`` only with ``id_accuracy``); a non-empty ``source`` that is a
    URL or ``"paper Table N, p. M"``; ``value`` numeric in [0, 100], or empty only for an
    ``unverified`` placeholder whose note says "no table available yet".

    Returns a DataFrame with the columns of :data:`COLUMNS`, text columns as ``str`` and
    ``value`` as ``float`` (NaN for placeholders).
    """
    path = Path(path) if path is not None else REFERENCE_CSV
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(df.columns) != COLUMNS:
        raise ValueError(f"{path}: columns {list(df.columns)} differ from the required {list(COLUMNS)}")
    values = []
    for i, row in df.iterrows():
        where = f"{path.name} row {i + 2}"  # +2: header line, 1-based
        try:
            check_choice(row["benchmark"], "benchmark", BENCHMARKS)
            check_choice(row["metric"], "metric", METRICS)
            check_choice(row["confidence"], "confidence", CONFIDENCE)
            check_choice(row["protocol"], "protocol", tuple(PROTOCOLS))
            sets = OOD_SETS[row["benchmark"]] + ((NO_OOD_SET,) if row["metric"] == "id_accuracy" else ())
            check_choice(row["ood_set"], f"ood_set for {row['benchmark']}/{row['metric']}", sets)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        for col in ("paper", "benchmark", "id_dataset", "model", "train_method", "scorer"):
            if not row[col].strip():
                raise ValueError(f"{where}: empty {col!r}")
        if not _SOURCE_RE.match(row["source"].strip()):
            raise ValueError(f"{where}: source {row['source']!r} is neither a URL nor 'paper Table N, p. M'")
        raw = row["value"].strip()
        if raw == "":
            if row["confidence"] != "unverified" or PLACEHOLDER_NOTE not in row["note"]:
                raise ValueError(
                    f"{where}: empty value is allowed only for an 'unverified' row whose note says "
                    f"{PLACEHOLDER_NOTE!r}"
                )
            values.append(math.nan)
            continue
        try:
            v = float(raw)
        except ValueError:
            raise ValueError(f"{where}: value {raw!r} is not a number") from None
        if not (0.0 <= v <= 100.0):
            raise ValueError(f"{where}: value {v} is outside [0, 100] (values are percentages)")
        values.append(v)
    df["value"] = pd.Series(values, index=df.index, dtype=float)
    return df


def reference_for(benchmark: str, metric: str = "fpr95", ref: pd.DataFrame | None = None, **filters) -> pd.DataFrame:
    """Rows of the reference table for one benchmark and metric, optionally filtered.

    ``filters`` are column=value pairs (a list/tuple/set value keeps any of its members), e.g.
    ``reference_for("cifar10", paper="energy", model="wrn40_2")``. ``ref`` defaults to
    :func:`load_reference`. Placeholder rows (value NaN) are kept; :func:`side_by_side` drops them.
    Unknown benchmark, metric or column -> ``ValueError``.
    """
    check_choice(benchmark, "benchmark", BENCHMARKS)
    check_choice(metric, "metric", METRICS)
    df = load_reference() if ref is None else ref
    mask = (df["benchmark"] == benchmark) & (df["metric"] == metric)
    for col, want in filters.items():
        check_choice(col, "filter column", COLUMNS)
        if isinstance(want, (list, tuple, set, frozenset)):
            mask &= df[col].isin(list(want))
        else:
            mask &= df[col] == want
    return df[mask].reset_index(drop=True)


def for_profile(params: dict, profile: str, metric: str = "fpr95",
                ood_set: str = "average") -> tuple[str, str, pd.DataFrame]:
    """The reference rows a profile's results are compared with: its benchmark (the synthetic profile, which no
    paper reports, shows the CIFAR-10 profile's), its network, ``metric`` and ``ood_set``, and the profile's
    evaluation protocol only (``evaluate.protocol``, default :data:`OUR_PROTOCOL`).
    Returns (the profile whose references they are, the protocol, the rows)."""
    ref_profile = profile if profile != "synthetic" else "cifar10"
    block = params["profiles"][ref_profile]
    protocol = (params["profiles"][profile].get("evaluate") or {}).get("protocol", OUR_PROTOCOL)
    rows = reference_for(block["benchmark"]["id"], metric, model=block["model"]["name"], ood_set=ood_set,
                         protocol=protocol)
    return ref_profile, protocol, rows


def normalize_ours(ours: pd.DataFrame) -> pd.DataFrame:
    """Our tidy metrics table in the reference's key names.

    Input columns: ``benchmark, method, scorer, ood_set`` and the metric columns (percent).
    Output: the same rows with ``method`` renamed to ``train_method``, and method/scorer spellings
    mapped through :data:`METHOD_ALIASES` / :data:`SCORER_ALIASES` (lower-cased first).
    """
    missing = [c for c in ("benchmark", "method", "scorer", "ood_set") if c not in ours.columns]
    if missing:
        raise ValueError(f"ours lacks columns {missing}; expected benchmark, method, scorer, ood_set + metrics")
    out = ours.rename(columns={"method": "train_method"}).copy()
    tm = out["train_method"].astype(str).str.lower()
    out["train_method"] = tm.map(lambda s: METHOD_ALIASES.get(s, s))
    sc = out["scorer"].astype(str).str.lower()
    out["scorer"] = sc.map(lambda s: SCORER_ALIASES.get(s, s))
    return out


def side_by_side(
    ours: pd.DataFrame,
    ref: pd.DataFrame,
    on: Sequence[str] = ("benchmark", "train_method", "scorer", "ood_set"),
    metric: str = "fpr95",
    include_ours_only: bool = False,
    protocol: str | None = OUR_PROTOCOL,
) -> pd.DataFrame:
    """Our number next to the paper's, one row per reference cell.

    Only reference rows of ``protocol`` (default :data:`OUR_PROTOCOL`, the protocol of our numbers) are paired;
    ``None`` keeps every protocol (for listing the papers' numbers, not for comparing with ours).

    ``ours`` is the tidy ``metrics.csv`` format (``benchmark, method, scorer, ood_set, fpr95,
    auroc, aupr_in, aupr_out``, percent); its ``method`` is matched to the reference's
    ``train_method`` through :func:`normalize_ours`. ``ref`` is a slice of the reference table
    (e.g. from :func:`reference_for`); rows of other metrics and placeholders without a value are
    dropped, and the remaining rows must be unique on ``on`` (filter by ``paper``/``model``/``table``
    first, else ``ValueError``).

    Output columns: ``*on, ours, paper, diff, source, confidence`` with ``diff = ours - paper``.
    A cell the paper has and we have not run shows ``"not run"`` in ``ours`` and NaN in ``diff``.
    With ``include_ours_only`` our rows without a paper number are appended (``paper`` NaN).
    """
    check_choice(metric, "metric", METRICS)
    on = list(on)
    o = normalize_ours(ours)
    if metric not in o.columns:
        raise ValueError(f"ours has no column {metric!r}; metric columns are {', '.join(_OURS_METRIC_COLUMNS)}")
    for c in on:
        if c not in o.columns or c not in ref.columns:
            raise ValueError(f"key {c!r} must be a column of both ours and ref")
    r = ref
    if protocol is not None:
        check_choice(protocol, "protocol", tuple(PROTOCOLS))
        r = r[r["protocol"] == protocol]
    if "metric" in r.columns:
        r = r[r["metric"] == metric]
    r = r[r["value"].notna()]
    dup = r.duplicated(on, keep=False)
    if dup.any():
        first = r[dup].iloc[0]
        raise ValueError(
            f"ref has several rows for {dict(first[on])}; filter it first (e.g. by paper, model or table)"
        )
    dup_o = o.duplicated(on, keep=False)
    if dup_o.any():
        raise ValueError(f"ours has several rows for {dict(o[dup_o].iloc[0][on])}; aggregate seeds first")
    r = r[on + ["value", "source", "confidence"]].rename(columns={"value": "paper"})
    o = o[on + [metric]].rename(columns={metric: "ours"})
    how = "outer" if include_ours_only else "left"
    m = r.merge(o, on=on, how=how)
    ours_num = pd.to_numeric(m["ours"], errors="coerce")
    m["diff"] = ours_num - m["paper"]
    m["ours"] = pd.Series([NOT_RUN if pd.isna(v) else float(v) for v in ours_num], index=m.index, dtype=object)
    return m[on + ["ours", "paper", "diff", "source", "confidence"]].reset_index(drop=True)


def _cell(v, floatfmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return format(v, floatfmt)
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub-flavoured Markdown pipe table of ``df`` (floats with ``floatfmt``, NaN as empty)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"
