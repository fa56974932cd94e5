"""profiles/README.md, the fidelity table of the paper profiles, against the profiles themselves.

Every row ``| profile | knob | ours | paper | authors' code | status |`` of every table in profiles/README.md names a
knob by a dotted path, resolved for its profile as the training code would see it:

* ``method.<method>.<field>``: a :class:`ood.config.TrainConfig` field of ``config.method_config(params, method,
  profile)`` (the recipe, then the method's own keys, then the pipeline's ``init``);
* ``method.<method>.terms.<term>.<param>``: the parameter of the loss term as built for training
  (``ood.losses.build_term``: the YAML value, else the class default ``TERMS[term].defaults``);
* ``method.<method>.sampler.<param>``: the parameter of the sampler as built for training
  (``ood.sampling.build_sampler``: the YAML value, else the constructor's default); ``name`` is the sampler's name;
* ``model.<key>``: the profile's ``model`` block, else a property of the network that block builds (``depth``,
  ``widen``, ``drop`` of a WideResNet);
* ``method.<method>.model.<key>``: the same for the network of one method, its own ``model: {...}`` overrides
  applied (``config.method_model``); required for every key a method overrides;
* ``benchmark.<key>[.<key>...]``: the profile's ``benchmark`` block.

The ``ours`` cell is YAML (flow style) and must equal the resolved value after ``yaml.safe_load`` (numbers exactly,
booleans and null by type, lists and mappings element by element). So editing a profile value, a term default or a
sampler default without updating the table fails here; so does dropping the row of a required knob
(:func:`required_knobs`).
"""
from __future__ import annotations

import copy
import inspect
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from ood import config
from ood.losses import build_term
from ood.sampling import SAMPLERS, build_sampler

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "profiles" / "README.md"
HEADER = ["profile", "knob", "ours", "paper", "authors' code", "status"]
PAPER_PROFILES = ["cifar10", "cifar100", "imagenet", "cifar10-offline"]
#: TrainConfig fields every method of a paper profile must have a row for (with every parameter of its loss terms
#: and of its sampler, the model block's keys and BENCHMARK_KEYS).
RECIPE_FIELDS = ["epochs", "batch_size", "out_batch_size", "lr", "optimizer", "momentum", "nesterov", "weight_decay",
                 "schedule", "milestones", "amp", "init"]
BENCHMARK_KEYS = ["id", "ood", "aux", "num_classes", "subset", "average_over", "image_size", "resize", "sizes"]
#: TrainConfig fields that do not change the numbers (how the loop runs), or are listed elsewhere.
UNTABLED_FIELDS = {"recipe", "terms", "sampler", "model", "seed", "channels_last", "nan_check_every"}
STATUS = re.compile(r"^(same\b|differs:\s*\S|unverifiable:\s*\S)")


# ---------------------------------------------------------------------------------------------
# Reading the table
# ---------------------------------------------------------------------------------------------

def _cells(line: str) -> list[str]:
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _unquote(cell: str) -> str:
    """A cell's text without one pair of surrounding backticks."""
    return cell[1:-1] if len(cell) >= 2 and cell[0] == cell[-1] == "`" else cell


def parse_table(text: str) -> list[dict]:
    """Every data row of every Markdown table whose header starts with ``profile | knob | ours``, as a dict of the
    HEADER columns plus ``line`` (1-based line number in the file)."""
    rows, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        cells = _cells(lines[i]) if lines[i].lstrip().startswith("|") else []
        if cells[:3] == HEADER[:3]:
            assert cells == HEADER, f"profiles/README.md:{i + 1}: table header must be exactly {HEADER}, got {cells}"
            assert i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= set("-: "), \
                f"profiles/README.md:{i + 2}: the header must be followed by a separator row"
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                c = _cells(lines[i])
                assert len(c) == len(HEADER), f"profiles/README.md:{i + 1}: {len(c)} cells, expected {len(HEADER)}"
                row = dict(zip(HEADER, c))
                row["profile"], row["knob"] = _unquote(row["profile"]), _unquote(row["knob"])
                row["line"] = i + 1
                rows.append(row)
                i += 1
            continue
        i += 1
    return rows


# ---------------------------------------------------------------------------------------------
# Resolving a knob
# ---------------------------------------------------------------------------------------------

_WRN_PROBES = {
    "depth": lambda m: 2 * len(m.blocks) + 4,           # 3 groups of (depth - 4) / 6 blocks
    "widen": lambda m: m.fc.in_features // 64,          # last group width 64 * widen
    "drop": lambda m: m.blocks[0].drop,
}


def _model_property(params: dict, profile: str, key: str, method: str | None = None):
    from ood.config import model_spec
    from ood.models import WideResNet, build_model

    spec = model_spec(params, profile, method)
    model = build_model(spec["name"], spec["num_classes"], spec["mean"], spec["std"], **spec["kwargs"])
    if isinstance(model, WideResNet) and key in _WRN_PROBES:
        return _WRN_PROBES[key](model)
    raise KeyError(f"model.{key}: not in the model block of {profile!r} and not a property of {type(model).__name__}")


def resolve(params: dict, profile: str, knob: str):
    """The effective value of ``knob`` for ``profile`` (raises KeyError / ParamError / ValueError if it names
    nothing)."""
    parts = knob.split(".")
    block = config.profile_params(params, profile)
    if parts[0] in ("model", "benchmark") and len(parts) >= 2:
        node = block[parts[0]]
        if parts[0] == "model" and len(parts) == 2 and parts[1] not in node:
            return _model_property(params, profile, parts[1])
        for p in parts[1:]:
            if not isinstance(node, dict) or p not in node:
                raise KeyError(f"{knob}: no key {p!r} in profile {profile!r}")
            node = node[p]
        return node
    if parts[0] != "method" or len(parts) < 3:
        raise KeyError(f"{knob}: not of the form method.<method>.<field|terms.<t>.<p>|sampler.<p>>, "
                       "model.<key> or benchmark.<key>")
    method = parts[1]
    cfg = config.method_config(params, method, profile)
    rest = parts[2:]
    if rest[0] == "model" and len(rest) == 2:   # the network this method trains (its own model overrides applied)
        model = config.method_model(block, method)
        return model[rest[1]] if rest[1] in model else _model_property(params, profile, rest[1], method)
    if rest[0] == "terms" and len(rest) == 3:
        term, param = rest[1], rest[2]
        if term not in cfg.terms:
            raise KeyError(f"{knob}: method {method!r} of {profile!r} has no loss term {term!r} "
                           f"(it has {', '.join(cfg.terms)})")
        built = build_term(term, **(cfg.terms[term] or {}))
        if param not in built.params:
            raise KeyError(f"{knob}: loss term {term!r} has no parameter {param!r}")
        return built.params[param]
    if rest[0] == "sampler" and len(rest) == 2:
        if not cfg.sampler:
            raise KeyError(f"{knob}: method {method!r} of {profile!r} has no sampler")
        spec = dict(cfg.sampler)
        name = spec.pop("name")
        if rest[1] == "name":
            return name
        if rest[1] not in _sampler_params(name):
            raise KeyError(f"{knob}: sampler {name!r} has no parameter {rest[1]!r}")
        return getattr(build_sampler(name, **spec), rest[1])
    if len(rest) == 1 and rest[0] in config._TRAIN_FIELDS:
        return getattr(cfg, rest[0])
    raise KeyError(f"{knob}: {'.'.join(rest)!r} is not a TrainConfig field, terms.<term>.<param> or sampler.<param>")


def _sampler_params(name: str) -> list[str]:
    return [p for p in inspect.signature(SAMPLERS[name].__init__).parameters if p != "self"]


def same_value(a, b) -> bool:
    """Equality after YAML parsing: numbers exactly (1 == 1.0), but a bool only equals a bool and None only None;
    lists (or tuples) and mappings element by element."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def row_errors(params: dict, rows: list[dict]) -> list[str]:
    """One message per row whose knob does not resolve, whose ``ours`` differs from the effective value, or whose
    status is not of the vocabulary; and per duplicated (profile, knob)."""
    errors, seen = [], {}
    for r in rows:
        where = f"profiles/README.md:{r['line']} ({r['profile']} {r['knob']})"
        if (r["profile"], r["knob"]) in seen:
            errors.append(f"{where}: duplicate of line {seen[r['profile'], r['knob']]}")
        seen[r["profile"], r["knob"]] = r["line"]
        try:
            ours = yaml.safe_load(_unquote(r["ours"]))
        except yaml.YAMLError as e:
            errors.append(f"{where}: ours {r['ours']!r} is not YAML ({e})")
            continue
        try:
            actual = resolve(params, r["profile"], r["knob"])
        except (KeyError, ValueError) as e:  # ParamError is a ValueError
            errors.append(f"{where}: does not resolve: {e}")
            continue
        if not same_value(ours, actual):
            errors.append(f"{where}: table says {r['ours']!r}, the profile gives {actual!r}")
        if not STATUS.match(r["status"]):
            errors.append(f"{where}: status {r['status']!r} must be 'same', 'differs: <reason>' or "
                          "'unverifiable: <reason>'")
        if not r["paper"] or not r["authors' code"]:
            errors.append(f"{where}: empty paper or authors' code cell (write ? when unknown)")
    return errors


def required_knobs(params: dict, profile: str) -> list[str]:
    """The knobs of ``profile`` that must each have a row."""
    block = config.profile_params(params, profile)
    knobs = [f"model.{k}" for k in block["model"]]
    knobs += [f"benchmark.{k}" for k in BENCHMARK_KEYS if k in block["benchmark"]]
    for method in block["method"]:
        cfg = config.method_config(params, method, profile)
        knobs += [f"method.{method}.{f}" for f in RECIPE_FIELDS]
        # any other TrainConfig field the profile sets (e.g. steps_per_epoch, warmup_epochs) needs a row too
        spec = block["method"][method]
        own = set(block["recipes"].get(spec.get("recipe", "scratch"), {})) | set(spec)
        knobs += [f"method.{method}.{f}" for f in sorted(own - set(RECIPE_FIELDS) - UNTABLED_FIELDS)]
        if cfg.schedule == "step" and f"method.{method}.gamma" not in knobs:
            knobs.append(f"method.{method}.gamma")
        for term, p in cfg.terms.items():
            knobs += [f"method.{method}.terms.{term}.{k}" for k in build_term(term, **(p or {})).params]
        knobs += [f"method.{method}.model.{k}" for k in (spec.get("model") or {})]
        if cfg.sampler:
            knobs.append(f"method.{method}.sampler.name")
            knobs += [f"method.{method}.sampler.{k}" for k in _sampler_params(cfg.sampler["name"])]
    return knobs


def coverage_errors(params: dict, rows: list[dict]) -> list[str]:
    have = {(r["profile"], r["knob"]) for r in rows}
    errors = []
    for profile in PAPER_PROFILES:
        if not any(r["profile"] == profile for r in rows):
            errors.append(f"profile {profile!r} has no rows")
            continue
        errors += [f"{profile}: no row for {k}" for k in required_knobs(params, profile) if (profile, k) not in have]
    return errors


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def params():
    return config.load_params()


@lru_cache(maxsize=1)
def _rows() -> tuple:
    return tuple(parse_table(TABLE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def rows():
    assert TABLE.is_file(), f"{TABLE} is missing"
    found = [dict(r) for r in _rows()]
    assert found, f"no table with the header | {' | '.join(HEADER)} | in {TABLE}"
    return found


def test_every_row_matches_the_profiles(params, rows):
    errors = row_errors(params, rows)
    assert not errors, f"{len(errors)} row(s) of profiles/README.md disagree with the profiles:\n" + "\n".join(errors)


def test_every_row_names_a_paper_profile(rows):
    bad = sorted({r["profile"] for r in rows} - set(PAPER_PROFILES))
    assert not bad, f"rows for profiles that are not paper profiles: {bad}"


def test_every_knob_that_matters_has_a_row(params, rows):
    errors = coverage_errors(params, rows)
    assert not errors, f"{len(errors)} knob(s) missing from profiles/README.md:\n" + "\n".join(errors)


def test_a_differing_or_unverifiable_row_gives_its_reason(rows):
    for r in rows:
        head, _, reason = r["status"].partition(":")
        if head in ("differs", "unverifiable"):
            assert len(reason.strip()) >= 10, f"profiles/README.md:{r['line']}: {head} without a reason"


# The table must catch a profile edited without it: checked on modified copies of the params, in memory.
@pytest.mark.parametrize("path, value", [
    (("cifar10", "recipes", "greg_plus", "weight_decay"), 5.0e-4),
    (("cifar100", "recipes", "finetune_energy", "lr"), 0.01),
    (("imagenet", "method", "greg", "terms", "grad_penalty"), {"weight": 1.0, "m_in": -25.0, "m_out": -7.0,
                                                               "scaling": "paper"}),
    (("cifar10-offline", "method", "greg_plus", "sampler", "pool_factor"), 7),
    (("cifar10", "method", "energy_oe", "terms", "energy_margin", "m_in"), -25.0),
    (("cifar10", "recipes", "scratch", "amp"), True),
    (("cifar100", "model", "drop"), 0.3),
    (("imagenet", "benchmark", "aux"), "imagenet-aux990"),
    (("cifar10", "recipes", "greg_plus", "milestones"), [50, 55]),
    (("cifar10", "method", "ce", "model"), {"drop": 0.0}),
    (("cifar100", "method", "greg", "model", "mean"), [0.4914, 0.4824, 0.4467]),
    (("cifar100", "method", "greg_plus", "sampler", "feature_norm"), "row"),
    (("imagenet", "method", "greg_plus", "sampler", "candidates_per_epoch"), 600000),
])
def test_an_edited_profile_value_fails_the_table(params, rows, path, value):
    modified = copy.deepcopy(params)
    node = modified["profiles"]
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    assert row_errors(modified, rows), f"changing {'.'.join(path)} to {value!r} went unnoticed by the table"


def test_a_changed_default_fails_the_table(params, rows, monkeypatch):
    from ood.losses import GradPenalty
    from ood.sampling import EnergyClusterSampler

    monkeypatch.setitem(GradPenalty.defaults, "scaling", "paper")
    assert any("grad_penalty.scaling" in e for e in row_errors(params, rows))
    monkeypatch.undo()
    init = EnergyClusterSampler.__init__
    defaults = dict(zip(_sampler_params("energy_cluster"), init.__defaults__))
    monkeypatch.setattr(init, "__defaults__", tuple({**defaults, "kmeans_iters": 50}.values()))
    assert any("sampler.kmeans_iters" in e for e in row_errors(params, rows))


def test_a_newly_set_field_needs_a_row(params, rows):
    modified = copy.deepcopy(params)
    modified["profiles"]["cifar10"]["recipes"]["greg_plus"]["steps_per_epoch"] = 100
    assert any("method.greg_plus.steps_per_epoch" in e for e in coverage_errors(modified, rows))


def test_a_dropped_row_fails_the_coverage(params, rows):
    for knob in ("method.greg_plus.weight_decay", "method.oe.terms.oe.weight", "method.greg.lr",
                 "method.energy_oe.epochs"):
        kept = [r for r in rows if not (r["profile"] == "cifar100" and r["knob"] == knob)]
        assert len(kept) == len(rows) - 1, knob
        assert any(knob in e for e in coverage_errors(params, kept)), knob


def test_the_checks_themselves():
    assert same_value(5.0e-4, yaml.safe_load("5.0e-4")) and not same_value(5.0e-4, yaml.safe_load("5e-4"))
    assert not same_value(False, 0) and not same_value(None, 0) and same_value(1, 1.0)
    assert same_value([50], [50]) and not same_value([50], [50, 75])
    rows = parse_table("x\n| profile | knob | ours | paper | authors' code | status |\n|---|---|---|---|---|---|\n"
                       "| cifar10 | `method.ce.lr` | `0.1` | ? | a | same |\n\ntext\n")
    assert [(r["profile"], r["knob"], r["ours"], r["line"]) for r in rows] == [("cifar10", "method.ce.lr", "`0.1`", 4)]
