"""params.yaml validation and the notebooks' parameter checks."""
import copy
from pathlib import Path

import pytest
import yaml

from ood import config
from ood.methods import METHODS


@pytest.fixture(scope="module")
def params():
    # the checkout's params.yaml: under the suite, repo_root() is the pipeline's copy, whose seeds the one-seed run set
    return config.load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def _trained(params) -> list[str]:
    """The methods the pipeline trains: scratch ones, then fine-tunes (dvc.yaml's two foreach lists)."""
    return list(params["pipeline"]["scratch"]) + list(params["pipeline"]["finetune"])


def test_every_pipeline_method_resolves_in_every_profile(params):
    methods = _trained(params)
    assert sorted(methods) == sorted(params["pipeline"]["evaluate"]), "pipeline.evaluate must list every trained method"
    for profile in config.profiles(params):
        for m in methods:
            cfg = config.method_config(params, m, profile)
            assert cfg.method == m and cfg.terms
            spec = params["profiles"][profile]["method"][m]
            assert cfg.init == (spec["init"] if "init" in spec else METHODS[m].init)
            if cfg.init is not None:  # a fine-tune starts from a method the pipeline trains
                assert cfg.init in methods and cfg.init != m


def test_finetune_sources_are_trained_methods(params):
    methods = set(_trained(params))
    for m, src in params["pipeline"]["finetune"].items():
        assert src in methods, f"{m} fine-tunes from {src}, which the pipeline does not train"


def test_overrides_apply_and_none_is_ignored(params):
    base = config.method_config(params, "ce", "synthetic")
    cfg = config.method_config(params, "ce", "synthetic", epochs=1, lr=None)
    assert cfg.epochs == 1 and cfg.lr == base.lr


@pytest.mark.parametrize("kw, word", [({"epochs": -1}, "epochs"), ({"lr": 0}, "lr"), ({"batch_size": 0}, "batch_size"),
                                      ({"schedule": "linear"}, "schedule"), ({"bogus": 1}, "bogus")])
def test_bad_training_values_name_the_key(params, kw, word):
    with pytest.raises(config.ParamError, match=word):
        config.method_config(params, "ce", "synthetic", **kw)


def test_unknown_method_and_profile_list_allowed(params):
    with pytest.raises(config.ParamError, match="allowed: .*greg"):
        config.method_config(params, "gregg", "synthetic")
    with pytest.raises(config.ParamError, match="allowed: .*synthetic"):
        config.profile_params(params, "cifar11")


def _ns(**kw):
    ns = {"profile": "synthetic", "device": "auto", "method": "ce", "epochs": None, "lr": None, "batch_size": None,
          "steps_per_epoch": None, "seeds": None, "run_dir": None}
    ns.update(kw)
    return ns


def test_notebook_params_accept_defaults(params):
    args = config.check_notebook_params("train", _ns(), before=set(), params=params)
    assert args.method == "ce" and args.epochs is None


@pytest.mark.parametrize("kw, msg", [
    ({"method": "sgd"}, r"'method'; allowed: 'ce', 'bfm'"),
    ({"epochs": -3}, r"'epochs'; allowed: an integer >= 0 or None"),
    ({"epochs": True}, r"invalid value True for parameter 'epochs'; allowed: an integer >= 0 or None"),
    ({"epochs": 3.0}, r"invalid value 3.0 for parameter 'epochs'; allowed: an integer >= 0 or None"),
    ({"lr": 0}, r"invalid value 0 for parameter 'lr'; allowed: a number > 0 or None"),
    ({"lr": float("nan")}, r"invalid value nan for parameter 'lr'"),
    ({"profile": "mnist"}, r"'profile'; allowed: .*synthetic"),
    ({"device": "tpu"}, r"'device'; allowed: 'auto', 'cpu', 'cuda'"),
    ({"epoch": 3}, r"unknown parameter 'epoch' for notebook 'train'; allowed: profile, device, method, epochs"),
    ({"seeds": [0, 0]}, r"'seeds'; allowed: a non-empty list of distinct integers >= 0 or None"),
    ({"seeds": 3}, r"'seeds'; allowed: a non-empty list"),
    ({"seeds": []}, r"'seeds'; allowed: a non-empty list"),
    ({"seeds": [0, True]}, r"'seeds'; allowed: a non-empty list"),
    ({"run_dir": ""}, r"invalid value '' for parameter 'run_dir'; allowed: a path or None"),
])
def test_notebook_params_reject_with_one_line(params, kw, msg):
    with pytest.raises(config.ParamError, match=msg) as e:
        config.check_notebook_params("train", _ns(**kw), before=set(), params=params)
    assert "\n" not in str(e.value)


def test_names_defined_before_the_parameters_cell_are_not_parameters(params):
    ns = _ns(pipeline=object())
    config.check_notebook_params("train", ns, before={"pipeline"}, params=params)


def test_unknown_recipe_key_is_reported(params):
    bad = copy.deepcopy(params)
    bad["profiles"]["synthetic"]["method"]["ce"]["epochs_"] = 3
    with pytest.raises(config.ParamError, match="epochs_"):
        config.method_config(bad, "ce", "synthetic")


def test_channels_last_is_auto_by_device_and_method(params):
    ce = config.method_config(params, "ce", "synthetic")
    greg = config.method_config(params, "greg", "synthetic")
    assert ce.channels_last is None and greg.channels_last is None
    assert config.uses_channels_last(ce, "cpu") and config.uses_channels_last(ce, "cuda")
    assert not config.uses_channels_last(greg, "cpu")      # double backward: ~2x slower in channels_last on CPU
    assert config.uses_channels_last(greg, "cuda:0")
    forced = config.method_config(params, "greg", "synthetic", channels_last=True)
    assert config.uses_channels_last(forced, "cpu")
    with pytest.raises(config.ParamError, match="channels_last"):
        config.method_config(params, "ce", "synthetic", channels_last="yes")


def test_profiles_live_in_their_own_files_and_are_checked(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: a\nseed: 0\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "a.yaml").write_text("a: {benchmark: {}, model: {}, recipes: {}, method: {}, "
                                                  "evaluate: {}}\n")
    params = config.load_params(tmp_path / "params.yaml")
    assert config.profiles(params) == ["a"] and config.profile_params(params)["model"] == {}
    (tmp_path / "profiles" / "b.yaml").write_text("c: {}\n")
    with pytest.raises(config.ParamError, match=r"b.yaml must hold one top-level key, 'b'"):
        config.load_params(tmp_path / "params.yaml")
    (tmp_path / "profiles" / "b.yaml").write_text("b: {model: {}}\n")
    with pytest.raises(config.ParamError, match=r"profile 'b' lacks its 'benchmark' block in profiles/b.yaml"):
        config.profile_params(config.load_params(tmp_path / "params.yaml"), "b")


def test_repository_profiles_are_the_documented_six(params):
    assert config.profiles(params) == ["cifar10", "cifar10-cpu", "cifar10-offline", "cifar100", "imagenet", "synthetic"]
    readme = (config.repo_root() / "README.md").read_text()
    assert all(f"`{p}`" in readme for p in config.profiles(params))


def test_pipeline_seeds_come_from_params_and_are_checked(params):
    from ood.pipeline import paths, seeds_of

    assert seeds_of(params) == params["seeds"] and len(params["seeds"]) >= 3
    assert seeds_of(params, [5]) == [5]
    with pytest.raises(config.ParamError, match="'seeds'; allowed"):
        seeds_of({"seeds": [1, -1]})
    p = paths("synthetic", "greg", seed=2)
    assert p["run"].parts[-3:] == ("greg", "seeds", "2")
    assert p["scores"].name == "seed2.npz" and "run" not in paths("synthetic", "greg")


def test_method_model_overrides_resolve_and_are_checked():
    """A method's own ``model: {...}`` changes only drop/mean/std of its network; the paper profiles give CE, OE and
    Energy-OE the OE code's dropout 0.3 and GReg's WRN none, and the GReg-code methods of CIFAR-100 the CIFAR-100
    statistics (fidelity audit ranks 7 and 10)."""
    from ood.config import model_spec

    params = config.load_params()
    for prof in ("cifar10", "cifar100", "cifar10-offline"):
        for m in ("ce", "oe", "energy_oe"):
            assert model_spec(params, prof, m)["kwargs"]["drop"] == 0.3, (prof, m)
        for m in ("greg", "greg_plus", "bfm", "bfm_greg"):
            assert model_spec(params, prof, m)["kwargs"].get("drop", 0.0) == 0.0, (prof, m)
    c100 = [0.5071, 0.4865, 0.4409]
    for m in ("greg", "greg_plus", "oe_grad", "energy_oe_sampling", "bfm_greg"):
        assert model_spec(params, "cifar100", m)["mean"] == c100
    for m in ("ce", "oe", "energy_oe", "bfm"):
        assert model_spec(params, "cifar100", m)["mean"] == [0.4914, 0.4824, 0.4467]
    assert model_spec(params, "synthetic", "greg") == model_spec(params, "synthetic")
    bad = copy.deepcopy(params)
    bad["profiles"]["synthetic"]["method"]["greg"]["model"] = {"name": "wrn40_2"}
    with pytest.raises(config.ParamError, match="model key.*name.*allowed: drop, mean, std"):
        config.method_config(bad, "greg", "synthetic")


def test_figures_stage_depends_on_the_runs_of_every_method_a_figure_shows(params):
    """dvc.yaml cannot loop over a params list in `deps`, so the figures stage names its run folders; they must be
    those of params.yaml pipeline.figures, the one place the notebook reads them from."""
    stage = yaml.safe_load((config.repo_root() / "dvc.yaml").read_text())["stages"]["figures"]
    runs = {d.split("/")[2] for d in stage["deps"] if d.startswith("runs/${profile}/") and d.endswith("/seeds")}
    shown = {m for methods in params["pipeline"]["figures"].values() for m in methods}
    assert runs == shown
    assert "pipeline.figures" in stage["params"][0]["${params_file}"]


def test_stage_inputs_read_the_figure_lists_once(params):
    from ood import report

    p = copy.deepcopy(params)
    p["pipeline"]["figures"] = {"scores": ["greg", "ce"], "grad_norms": ["greg", "oe_grad"]}
    p["pipeline"]["evaluate"] = ["ce", "greg"]
    stage = report.stage_inputs("synthetic", p)
    assert stage.figures == {"scores": ["greg", "ce"], "feature_norms": [], "grad_norms": ["greg"]}
    assert stage.methods == ["ce", "greg"] and stage.seeds == p["seeds"]
    assert stage.ood_sets == list(p["profiles"]["synthetic"]["benchmark"]["ood"])
    p["pipeline"]["figures"] = {"histograms": ["ce"]}
    with pytest.raises(config.ParamError, match="unknown figure.*histograms.*allowed: scores"):
        report.stage_inputs("synthetic", p)
    p["pipeline"]["figures"] = {"scores": ["cee"]}
    with pytest.raises(config.ParamError, match="invalid value 'cee' for a method of pipeline.figures.scores"):
        report.stage_inputs("synthetic", p)


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2"])
def test_seed_workers_must_be_an_integer_of_at_least_one(params, bad):
    from ood import pipeline

    with pytest.raises(config.ParamError, match=r"invalid value .* for 'seed_workers'; allowed: an integer >= 1$"):
        pipeline.seed_workers({**params, "seed_workers": bad})
    assert pipeline.seed_workers({**params, "seed_workers": 2}) == 2
    assert pipeline.seed_workers({k: v for k, v in params.items() if k != "seed_workers"}) == 1


def test_the_docs_notebook_table_lists_each_notebooks_parameters():
    """docs/pipeline.md's table of notebooks names each notebook's parameters, in its schema's order."""
    import re

    names = {"00_tour": "tour", "01_data": "data", "02_train": "train", "03_evaluate": "evaluate",
             "04_tables": "tables", "05_figures": "figures", "06_ablations": "ablations"}
    text = (config.repo_root() / "docs" / "pipeline.md").read_text()
    rows = {m.group(1): re.findall(r"`(\w+)`", m.group(2))
            for m in re.finditer(r"^\| `notebooks/(\d\d_\w+)\.ipynb` \|.*\| ([^|]*) \|$", text, flags=re.M)}
    from ood.run_checkpoint import INSTALL_PARAMS

    assert set(rows) == set(names) | {"02_published"}
    for nb, schema in names.items():
        assert rows[nb] == list(config.NOTEBOOK_SCHEMAS[schema]), nb
    assert rows["02_published"] == list(INSTALL_PARAMS)   # its own check (ood.run_checkpoint.check_install_params)
    # and the schema's overrides are TrainConfig's overridable fields
    train = list(config.NOTEBOOK_SCHEMAS["train"])
    assert train[train.index("method") + 1:train.index("seeds")] == list(config.OVERRIDES)
