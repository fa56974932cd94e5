"""The method catalogue (ood.methods) is the one place a composition is written: every profile, both pipelines'
method lists, the docs' lists of methods and scorers and the profiles' scorer lists agree with the registries."""
import copy
import re

import pytest

from ood import config
from ood.losses import TERMS
from ood.methods import METHODS, Method, method
from ood.sampling import SAMPLERS
from ood.scorers import SCORERS, profile_scorers

PIPELINES = ["params.yaml", "pipelines/cifar10-cpu/params.yaml", "pipelines/cifar10/params.yaml",
             "pipelines/cifar100/params.yaml"]


@pytest.fixture(scope="module", params=PIPELINES)
def pipeline_params(request):
    return config.load_params(config.repo_root() / request.param)


def test_catalogue_names_registered_terms_samplers_and_methods():
    for name, m in METHODS.items():
        assert isinstance(m, Method) and m.terms and m.source
        assert m.terms[0] == "ce", f"{name}: every method keeps the ID cross-entropy first"
        assert set(m.terms) <= set(TERMS), name
        assert len(set(m.terms)) == len(m.terms), name
        assert m.sampler is None or m.sampler in SAMPLERS, name
        assert m.init is None or (m.init in METHODS and METHODS[m.init].init is None), name


def test_unknown_method_names_the_catalogue():
    with pytest.raises(ValueError, match="unknown method 'gregg'; allowed: ce, bfm, oe"):
        method("gregg")
    params = config.load_params()
    with pytest.raises(config.ParamError, match="unknown method 'gregg'; allowed: ce, bfm"):
        config.method_config(params, "gregg", "synthetic")


def test_pipelines_wire_the_catalogue(pipeline_params):
    """dvc.yaml iterates over params.yaml's `pipeline` lists; they must say what the catalogue says."""
    pipe = pipeline_params["pipeline"]
    # a method's run comes from one stage: trained (scratch, finetune) or a published network (published)
    run = list(pipe.get("published") or {}) + list(pipe["scratch"]) + list(pipe["finetune"])
    assert len(set(run)) == len(run) and set(run) <= set(METHODS) and sorted(pipe["evaluate"]) == sorted(run)
    for m in list(pipe.get("published") or {}) + list(pipe["scratch"]):
        assert METHODS[m].init is None, f"{m} fine-tunes from {METHODS[m].init} (ood.methods) but is listed as scratch"
    for m, src in pipe["finetune"].items():
        assert src == METHODS[m].init, f"pipeline.finetune: {m} starts from {src}; ood.methods: {METHODS[m].init}"


def test_every_profile_keys_every_pipeline_method(pipeline_params):
    """DVC pins each train stage to `<profile>.method.<m>`, so the key must exist (`{}` states nothing)."""
    pipe = pipeline_params["pipeline"]
    for profile in config.profiles(pipeline_params):
        block = pipeline_params["profiles"][profile]["method"]
        missing = [m for m in [*(pipe.get("published") or {}), *pipe["scratch"], *pipe["finetune"]] if m not in block]
        assert not missing, f"profiles/{profile}.yaml lacks method key(s) {missing}"


def test_composition_comes_from_the_catalogue():
    params = config.load_params()
    for m, comp in METHODS.items():
        cfg = config.method_config(params, m, "synthetic")
        assert tuple(cfg.terms) == comp.terms
        assert (cfg.sampler or {}).get("name") == comp.sampler
    cfg = config.method_config(params, "greg", "synthetic")
    assert cfg.terms["ce"] == {} and cfg.terms["grad_penalty"]["weight"] == 100.0


def _with(params, method_block, profile="synthetic"):
    p = copy.deepcopy(params)
    p["profiles"][profile]["method"].update(method_block)
    return p


def test_a_profile_gives_parameters_not_compositions():
    params = config.load_params()
    with pytest.raises(config.ParamError, match="'oe' not in its composition; allowed: ce, energy_margin"):
        config.method_config(_with(params, {"energy_oe": {"terms": {"oe": {}}}}), "energy_oe", "synthetic")
    with pytest.raises(config.ParamError, match="'sampler' gives the parameters of its sampler"):
        config.method_config(_with(params, {"greg_plus": {"sampler": {"name": "random"}}}), "greg_plus", "synthetic")
    with pytest.raises(config.ParamError, match=r"sampler \(none: random outliers"):
        config.method_config(_with(params, {"greg": {"sampler": {"pool_factor": 2}}}), "greg", "synthetic")
    # a method the profile does not mention takes its composition, the default recipe and the terms' defaults
    p = copy.deepcopy(params)
    del p["profiles"]["synthetic"]["method"]["oe"]
    cfg = config.method_config(p, "oe", "synthetic")
    assert cfg.terms == {"ce": {}, "oe": {}} and cfg.init == "ce"
    assert cfg.lr == p["profiles"]["synthetic"]["recipes"]["finetune"]["lr"]
    # init: null trains from scratch, with the scratch recipe unless the block names one
    cfg = config.method_config(_with(params, {"oe": {"init": None}}), "oe", "synthetic")
    assert cfg.init is None and cfg.epochs == params["profiles"]["synthetic"]["recipes"]["scratch"]["epochs"]


def test_scorer_list_defaults_to_the_registry_and_may_narrow():
    params = config.load_params()
    for profile in config.profiles(params):   # cifar10-cpu included (issue 41: its narrowing to 14 went)
        assert "scorers" not in params["profiles"][profile]["evaluate"], f"{profile} narrows its scorers"
        assert profile_scorers(params["profiles"][profile]) == list(SCORERS)
    assert profile_scorers({"evaluate": {"scorers": ["energy", "knn"]}}) == ["energy", "knn"]
    with pytest.raises(ValueError, match="invalid value 'energi'.*allowed: 'msp'"):
        profile_scorers({"evaluate": {"scorers": ["energi"]}})


def _names_after(text: str, lead: str) -> list[str]:
    para = text[text.index(lead):].split("\n\n")[0]
    return re.findall(r"`([a-z_0-9]+)`", para)


def test_docs_name_only_registered_methods_and_point_at_both_registries():
    text = (config.repo_root() / "docs" / "pipeline.md").read_text()
    para = text[text.index("Training methods"):].split("\n\n")[0]
    named = [n for n in _names_after(text, "Training methods") if "_" in n or n in METHODS or n.isalpha()]
    stale = [n for n in named if n not in METHODS and n not in ("init",)]
    assert "ood.methods.METHODS" in para and not stale, f"docs/pipeline.md names unregistered methods {stale}"
    para = text[text.index("Post-hoc scorers"):].split("\n\n")[0]
    assert "ood.scorers.SCORERS" in para and not set(_names_after(text, "Post-hoc scorers")) & set(SCORERS), \
        "docs/pipeline.md points at the registry instead of repeating it (adding a scorer edits no doc)"
