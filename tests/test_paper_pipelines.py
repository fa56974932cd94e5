"""The paper profiles' own pipelines (pipelines/cifar10/, pipelines/cifar100/): CE is the authors' published
network (issue 39), and everything else is the root pipeline's. What runs them is rehearsed in test_rehearsal.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ood import checkpoints, config

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["pipelines/cifar10", "pipelines/cifar100"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_is_the_root_pipeline_with_ce_taken_from_the_authors(folder):
    assert (ROOT / folder / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text(), \
        f"{folder}/dvc.yaml must be a copy of dvc.yaml"
    own = yaml.safe_load((ROOT / folder / "params.yaml").read_text())
    root = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = own["profile"]
    assert folder == f"pipelines/{profile}" and own["params_file"] == f"{folder}/params.yaml" and own["root"] == "../.."
    pipe, base = own["pipeline"], root["pipeline"]
    assert list(pipe["published"]) == ["ce"] and "ce" not in pipe["scratch"]
    assert sorted(pipe["scratch"] + ["ce"]) == sorted(base["scratch"])
    assert pipe["finetune"] == base["finetune"] and pipe["evaluate"] == base["evaluate"]
    assert pipe["figures"] == base["figures"]
    # the network is the Energy code's CE of the profile's ID set, and it fits the profile's CE network
    params = config.load_params(ROOT / folder / "params.yaml")
    block = config.profile_params(params, profile)
    entry = checkpoints.check_benchmark(pipe["published"]["ce"], block["benchmark"], profile)
    assert entry.method == "ce" and "pretrained" in entry.repo_path
    spec = config.model_spec(params, profile, "ce")
    assert spec["name"] == entry.arch and spec["num_classes"] == entry.num_classes
    assert spec["kwargs"] == entry.kwargs == {"drop": 0.3}     # the authors trained it with dropout 0.3
    assert spec["mean"] == pytest.approx(list(entry.mean), abs=5e-4)
    assert spec["std"] == pytest.approx(list(entry.std), abs=5e-4)
    # the fine-tunes of the Energy and OE code start from it; GReg+ trains from scratch (its init: null)
    for m in ("energy_oe", "oe", "oe_grad", "energy_oe_sampling", "greg"):
        assert config.method_config(params, m, profile).init == "ce", m
    assert config.method_config(params, "greg_plus", profile).init is None
