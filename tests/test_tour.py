"""ood.tour: the tour's parameters and checkpoints (the pipeline's when trained as asked, else small runs of its
own), on a tiny benchmark."""
import copy

import pytest
import torch

from ood import config, tour
from ood.data import ArrayDataset


def _tour_values(**kw):
    v = dict(profile="synthetic", device="cpu", use_pipeline_runs=True, run_root="runs/tour", scratch_epochs=4,
             finetune_steps=None, bfm_ratio=None, grad_weight=0.5, n_show=4, n_pick=32, seed=0)
    v.update(kw)
    return v


def test_tour_parameters_are_checked():
    P = config.check_notebook_params("tour", _tour_values(), before=[])
    assert P.bfm_ratio is None and P.grad_weight == 0.5
    with pytest.raises(config.ParamError, match="bfm_ratio"):
        config.check_notebook_params("tour", _tour_values(bfm_ratio=1.5), before=[])
    with pytest.raises(config.ParamError, match="scratch_epochs"):
        config.check_notebook_params("tour", _tour_values(scratch_epochs=0), before=[])
    with pytest.raises(config.ParamError, match="unknown parameter 'ratio'"):
        config.check_notebook_params("tour", {**_tour_values(), "ratio": 0.5}, before=[])


def _tiny_setup():
    params = copy.deepcopy(config.load_params())
    for r in params["profiles"]["synthetic"]["recipes"].values():
        r["batch_size"] = 16
        if r.get("out_batch_size"):
            r["out_batch_size"] = 16
    g = torch.Generator().manual_seed(0)

    def ds(name, n, labelled):
        y = torch.randint(0, 10, (n,), generator=g) if labelled else torch.full((n,), -1)
        return ArrayDataset(name, torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), y.long())

    from ood.benchmark import Benchmark

    bench = Benchmark("synthetic", ds("train", 48, True), ds("test", 16, True), {}, ds("aux", 48, False), 10)
    return params, bench


def test_tour_models_trains_reloads_and_prefers_matching_pipeline_runs(tmp_path):
    params, bench = _tiny_setup()
    kw = dict(scratch_epochs=1, finetune_steps=2, bench=bench, pipeline_root=tmp_path / "repo")
    runs = tour.tour_models(params, ["ce", "greg"], run_root=tmp_path / "tour", **kw)
    assert [r.source for r in runs.values()] == ["tour", "tour"]
    assert runs["greg"].run_dir.name.startswith("greg-") and (runs["greg"].run_dir / "model.pt").is_file()
    assert len(runs["greg"].history) == 1 and not runs["greg"].model.training
    assert len(runs["ce"].history) == 1  # scratch_epochs
    meta = torch.load(runs["greg"].run_dir / "model.pt", weights_only=True)["meta"]["config"]
    assert meta["steps_per_epoch"] == 2 and meta["init"] == "ce"  # finetune_steps
    assert runs["greg"].terms["grad_penalty"]["scaling"] == "authors"  # defaults filled in
    assert (runs["greg"].terms["grad_penalty"]["weight"]
            == params["profiles"]["synthetic"]["method"]["greg"]["terms"]["grad_penalty"]["weight"])
    # same settings: the same run folders are reloaded
    again = tour.tour_models(params, ["ce", "greg"], run_root=tmp_path / "tour", **kw)
    assert again["greg"].run_dir == runs["greg"].run_dir
    # a changed loss term trains anew
    other = tour.tour_models(params, ["ce", "greg"], run_root=tmp_path / "tour",
                             terms={"greg": {"grad_penalty": {"weight": 0.0}}}, **kw)
    assert other["greg"].run_dir != runs["greg"].run_dir and other["greg"].terms["grad_penalty"]["weight"] == 0.0
    same = tour.tour_models(params, ["ce", "greg"], run_root=tmp_path / "tour",
                            terms={"greg": {"grad_penalty": {"weight": None}}}, **kw)  # None: params.yaml's
    assert same["greg"].run_dir == runs["greg"].run_dir
    with pytest.raises(ValueError, match="list 'ce' before it"):
        tour.tour_models(params, ["greg"], run_root=tmp_path / "tour", use_pipeline_runs=False, **kw)

    # a pipeline checkpoint with the same loss terms is used; one trained otherwise is not
    import shutil

    pipe = tmp_path / "repo" / "runs" / "synthetic" / "ce" / "seeds" / "0"  # the first seed of params.yaml
    pipe.mkdir(parents=True)
    shutil.copy(runs["ce"].run_dir / "model.pt", pipe / "model.pt")
    got = tour.tour_models(params, ["ce", "greg_plus"], run_root=tmp_path / "tour", pipeline_only=("greg_plus",), **kw)
    assert got["ce"].source == "pipeline" and got["ce"].run_dir == pipe and "greg_plus" not in got
    got = tour.tour_models(params, ["ce"], run_root=tmp_path / "tour", use_pipeline_runs=False, **kw)
    assert got["ce"].source == "tour"
    got = tour.tour_models(params, ["ce"], run_root=tmp_path / "tour", terms={"ce": {"ce": {"weight": 2.0}}}, **kw)
    assert got["ce"].source == "tour", "a pipeline checkpoint trained with other loss terms must not be used"
    got = tour.tour_models(params, ["ce"], run_root=tmp_path / "tour", terms={"ce": {"ce": {"weight": 1.0}}}, **kw)
    assert got["ce"].source == "pipeline", "the default value of a term parameter is the same configuration"
    (pipe.parent / "bfm").mkdir()
    shutil.copy(pipe / "model.pt", pipe.parent / "bfm" / "model.pt")  # a CE checkpoint where BFM's should be
    got = tour.tour_models(params, ["bfm"], run_root=tmp_path / "tour", **kw)
    assert got["bfm"].source == "tour"
    with pytest.raises(ValueError, match="no loss term 'background'"):
        tour.tour_models(params, ["ce"], run_root=tmp_path / "tour", terms={"ce": {"background": {"ratio": 0.5}}}, **kw)
