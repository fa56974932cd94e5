"""params.yaml validation and the notebooks' parameter checks."""
import copy

import pytest

from ood import config as C


@pytest.fixture(scope="module")
def params():
    return C.load_params()


def _trained(params) -> list[str]:
    """The methods the pipeline trains: scratch ones, then fine-tunes (dvc.yaml's two foreach lists)."""
    return list(params["pipeline"]["scratch"]) + list(params["pipeline"]["finetune"])


def test_every_pipeline_method_resolves_in_every_profile(params):
    methods = _trained(params)
    assert sorted(methods) == sorted(params["pipeline"]["evaluate"]), "pipeline.evaluate must list every trained method"
    for profile in C.profiles(params):
        for m in methods:
            cfg = C.method_config(params, m, profile)
            assert cfg.method == m and cfg.terms
            explicit = "init" in params[profile]["method"][m]
            assert cfg.init == (params[profile]["method"][m]["init"] if explicit else C.init_of(params, m))
            if cfg.init is not None:  # a fine-tune starts from a method the pipeline trains
                assert cfg.init in methods and cfg.init != m


def test_finetune_sources_are_trained_methods(params):
    methods = set(_trained(params))
    for m, src in params["pipeline"]["finetune"].items():
        assert src in methods, f"{m} fine-tunes from {src}, which the pipeline does not train"


def test_overrides_apply_and_none_is_ignored(params):
    base = C.method_config(params, "ce", "synthetic")
    cfg = C.method_config(params, "ce", "synthetic", epochs=1, lr=None)
    assert cfg.epochs == 1 and cfg.lr == base.lr


@pytest.mark.parametrize("kw, word", [({"epochs": -1}, "epochs"), ({"lr": 0}, "lr"), ({"batch_size": 0}, "batch_size"),
                                      ({"schedule": "linear"}, "schedule"), ({"bogus": 1}, "bogus")])
def test_bad_training_values_name_the_key(params, kw, word):
    with pytest.raises(C.ParamError, match=word):
        C.method_config(params, "ce", "synthetic", **kw)


def test_unknown_method_and_profile_list_allowed(params):
    with pytest.raises(C.ParamError, match="allowed: .*greg"):
        C.method_config(params, "gregg", "synthetic")
    with pytest.raises(C.ParamError, match="allowed: .*synthetic"):
        C.profile_params(params, "cifar11")


def _ns(**kw):
    ns = {"profile": "synthetic", "device": "auto", "method": "ce", "epochs": None, "lr": None, "batch_size": None,
          "seeds": None, "run_dir": None}
    ns.update(kw)
    return ns


def test_notebook_params_accept_defaults(params):
    P = C.check_notebook_params("train", _ns(), before=set(), params=params)
    assert P.method == "ce" and P.epochs is None


@pytest.mark.parametrize("kw, msg", [
    ({"method": "sgd"}, r"'method'; allowed: ce, bfm"),
    ({"epochs": -3}, r"'epochs'; allowed: None or an integer >= 0"),
    ({"profile": "mnist"}, r"'profile'; allowed: .*synthetic"),
    ({"device": "tpu"}, r"'device'; allowed: auto, cpu, cuda"),
    ({"epoch": 3}, r"unknown parameter 'epoch' for notebook 'train'; allowed: profile, device, method, epochs"),
    ({"seeds": [0, 0]}, r"'seeds'; allowed: None or a non-empty list of distinct integers >= 0"),
    ({"seeds": 3}, r"'seeds'; allowed: None or a non-empty list"),
    ({"seeds": []}, r"'seeds'; allowed: None or a non-empty list"),
])
def test_notebook_params_reject_with_one_line(params, kw, msg):
    with pytest.raises(C.ParamError, match=msg) as e:
        C.check_notebook_params("train", _ns(**kw), before=set(), params=params)
    assert "\n" not in str(e.value)


def test_names_defined_before_the_parameters_cell_are_not_parameters(params):
    ns = _ns(pipeline=object())
    C.check_notebook_params("train", ns, before={"pipeline"}, params=params)


def test_unknown_recipe_key_is_reported(params):
    bad = copy.deepcopy(params)
    bad["synthetic"]["method"]["ce"]["epochs_"] = 3
    with pytest.raises(C.ParamError, match="epochs_"):
        C.method_config(bad, "ce", "synthetic")


def test_channels_last_is_auto_by_device_and_method(params):
    ce = C.method_config(params, "ce", "synthetic")
    greg = C.method_config(params, "greg", "synthetic")
    assert ce.channels_last is None and greg.channels_last is None
    assert C.uses_channels_last(ce, "cpu") and C.uses_channels_last(ce, "cuda")
    assert not C.uses_channels_last(greg, "cpu")      # double backward: ~2x slower in channels_last on CPU
    assert C.uses_channels_last(greg, "cuda:0")
    forced = C.method_config(params, "greg", "synthetic", channels_last=True)
    assert C.uses_channels_last(forced, "cpu")
    with pytest.raises(C.ParamError, match="channels_last"):
        C.method_config(params, "ce", "synthetic", channels_last="yes")


def test_profiles_live_in_their_own_files_and_are_checked(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: a\nseed: 0\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "a.yaml").write_text("a: {benchmark: {}, model: {}, recipes: {}, method: {}, evaluate: {}}\n")
    params = C.load_params(tmp_path / "params.yaml")
    assert C.profiles(params) == ["a"] and C.profile_params(params)["model"] == {}
    (tmp_path / "profiles" / "b.yaml").write_text("c: {}\n")
    with pytest.raises(C.ParamError, match=r"b.yaml must hold one top-level key, 'b'"):
        C.load_params(tmp_path / "params.yaml")
    (tmp_path / "profiles" / "b.yaml").write_text("b: {model: {}}\n")
    with pytest.raises(C.ParamError, match=r"profile 'b' lacks its 'benchmark' block in profiles/b.yaml"):
        C.profile_params(C.load_params(tmp_path / "params.yaml"), "b")


def test_repository_profiles_are_the_documented_six(params):
    assert C.profiles(params) == ["cifar10", "cifar10-cpu", "cifar10-offline", "cifar100", "imagenet", "synthetic"]
    readme = (C.repo_root() / "README.md").read_text()
    assert all(f"`{p}`" in readme for p in C.profiles(params))


def test_pipeline_seeds_come_from_params_and_are_checked(params):
    from ood.pipeline import paths, seeds_of

    assert seeds_of(params) == params["seeds"] and len(params["seeds"]) >= 3
    assert seeds_of(params, [5]) == [5]
    with pytest.raises(C.ParamError, match="'seeds'; allowed"):
        seeds_of({"seeds": [1, -1]})
    p = paths("synthetic", "greg", seed=2)
    assert p["run"].parts[-3:] == ("greg", "seeds", "2")
    assert p["scores"].name == "seed2.npz" and "run" not in paths("synthetic", "greg")


def test_method_model_overrides_resolve_and_are_checked():
    """A method's own ``model: {...}`` changes only drop/mean/std of its network; the paper profiles give CE, OE and
    Energy-OE the OE code's dropout 0.3 and GReg's WRN none, and the GReg-code methods of CIFAR-100 the CIFAR-100
    statistics (fidelity audit ranks 7 and 10)."""
    from ood.pipeline import model_spec

    params = C.load_params()
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
    bad["synthetic"]["method"]["greg"]["model"] = {"name": "wrn40_2"}
    with pytest.raises(C.ParamError, match="model key.*name.*allowed: drop, mean, std"):
        C.method_config(bad, "greg", "synthetic")
