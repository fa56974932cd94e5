"""The authors' published checkpoints (``ood.checkpoints``, issue 39), offline.

pytorch-ood 0.4.0's ``WideResNet`` has the authors' layout (energy_ood ``CIFAR/models/wrn.py``). Each test builds one
with random weights and random BatchNorm statistics, saves its state dict as the authors' file would be (plain, or
with the ``module.`` prefix of ``nn.DataParallel``), registers a test entry with the file's real SHA-256 (the registry
is monkeypatched; the real entries are not touched) and serves the file from a loopback HTTP server (127.0.0.1,
port 0, a thread, a request budget, shut down at the end) or a mirror folder. Nothing leaves the machine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_ood.model import WideResNet as AuthorsWideResNet

from loopback import folder_handler, serving
from ood import checkpoints
from ood.__main__ import main
from ood.data import fetching, load, registry
from ood.data.fetching import ChecksumError, DataMissingError
from ood.detector import Detector
from ood.models import WideResNet
from ood.scorers import SCORERS

NAME = "test_wrn"
FILE = "test_wrn_epoch_99.pt"
MAX_REQUESTS = 10


def authors_network(num_classes: int = 10, seed: int = 0) -> AuthorsWideResNet:
    """pytorch-ood's WRN-40-2 (dropout 0.3, as the authors'), random weights and BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    net = AuthorsWideResNet(num_classes=num_classes, depth=40, widen_factor=2, drop_rate=0.3)
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)
            m.num_batches_tracked.fill_(1000)
    net.fc.bias.data = 0.1 * torch.randn(num_classes, generator=g)
    return net.eval()


def authors_file(net: torch.nn.Module, prefix: bool = False) -> bytes:
    """The bytes of ``torch.save(net.state_dict())``, as the authors saved theirs (``prefix``: under DataParallel)."""
    state = (torch.nn.DataParallel(net) if prefix else net).state_dict()
    if prefix:
        assert all(k.startswith("module.") for k in state)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def register(monkeypatch, payload: bytes, url: str, **kw) -> checkpoints.Checkpoint:
    """A test entry of the registry with ``payload``'s SHA-256 and ``url`` as its official URL."""
    sha = hashlib.sha256(payload).hexdigest()
    entry = dataclasses.replace(checkpoints.CHECKPOINTS["energy_cifar10_wrn_pretrained"], name=NAME,
                                file=registry.FileInfo(f"{checkpoints.CHECKPOINT_DIR}/{FILE}", url, f"sha256:{sha}",
                                                       "a test entry"), **kw)
    monkeypatch.setitem(checkpoints.CHECKPOINTS, NAME, entry)
    return entry


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A loopback HTTP server serving ``tmp_path/www`` (a request budget of MAX_REQUESTS); no proxies, no mirrors
    from the environment, no shared data, the data root in ``tmp_path/root``, a short download timeout."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                registry.MIRRORS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv(fetching.TIMEOUT_ENV, "2")
    monkeypatch.setattr(fetching, "SHARED_DATA", tmp_path / "no-shared")
    monkeypatch.setattr(fetching, "DATA_ROOT", tmp_path / "root")
    state = {"folder": tmp_path / "www", "log": []}
    state["folder"].mkdir()
    with serving(folder_handler(state, MAX_REQUESTS)) as url:
        state["url"] = url
        yield state


def closed_port_url() -> str:
    """A loopback URL nothing listens at (connection refused): the official URL when there is no network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FILE}"


# ---------------------------------------------------------------------------------------------- the real entries

def test_the_registry_holds_the_six_files_of_issue_39_with_pytorch_oods_urls_and_digests():
    """Every real entry: a raw GitHub URL of the authors' repository and path, a full SHA-256, the OE/Energy CIFAR
    statistics and dropout 0.3; and each URL and digest is the one pytorch-ood 0.4.0's registry holds."""
    from pytorch_ood.model.registry import get_model_info

    keys = {"energy_cifar10_wrn_pretrained": "wrn-40-2/cifar10/crossentropy",
            "energy_cifar100_wrn_pretrained": "wrn-40-2/cifar100/crossentropy",
            "energy_cifar10_wrn_s1_energy_ft": "wrn-40-2/cifar10/energy/s1",
            "energy_cifar100_wrn_s1_energy_ft": "wrn-40-2/cifar100/energy/s1",
            "oe_cifar10_wrn_oe_tune": "wrn-40-2/cifar10/oe", "oe_cifar100_wrn_oe_tune": "wrn-40-2/cifar100/oe"}
    assert list(checkpoints.CHECKPOINTS) == list(keys)
    for name, key in keys.items():
        c, p = checkpoints.CHECKPOINTS[name], get_model_info(key)
        assert c.file.url == p.url == f"{c.repository}/raw/master/{c.repo_path}"
        assert c.file.checksum == f"sha256:{p.sha256}" and len(p.sha256) == 64
        assert repr(key) in c.file.source and "pytorch-ood 0.4.0" in c.file.source
        assert c.num_classes == p.arch_kwargs["num_classes"] and c.dataset == p.dataset
        assert c.kwargs == {"drop": p.arch_kwargs["drop_rate"]} == {"drop": 0.3}
        assert np.allclose(c.mean, p.preprocessing.mean, rtol=0, atol=1e-12)
        assert np.allclose(c.std, p.preprocessing.std, rtol=0, atol=1e-12)
        assert c.file.path == f"checkpoints/{Path(c.repo_path).name}"
    assert checkpoints.OE_CIFAR_MEAN == pytest.approx((0.4914, 0.4824, 0.4467), abs=2e-4)


def test_an_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown published checkpoint 'nope'; allowed: energy_cifar10_wrn_pretrained"):
        checkpoints.checkpoint_info("nope")


# ---------------------------------------------------------------------------------------------- loading

@pytest.mark.parametrize("source, prefix", [("http mirror", False), ("folder mirror", True), ("official URL", False)])
def test_loaded_network_gives_pytorch_oods_logits_and_features(server, monkeypatch, tmp_path, source, prefix):
    """Through the registry, from a loopback mirror, a folder mirror or the official URL (a ``module.`` prefix
    stripped): our WRN-40-2's logits and penultimate features equal pytorch-ood's on the same normalized input."""
    net = authors_network()
    payload = authors_file(net, prefix)
    (server["folder"] / FILE).write_bytes(payload)
    if source == "official URL":
        register(monkeypatch, payload, f"{server['url']}/{FILE}")
    else:
        register(monkeypatch, payload, closed_port_url())
        folder = tmp_path / "mirror"
        folder.mkdir()
        (folder / FILE).write_bytes(payload)
        monkeypatch.setenv(registry.MIRRORS_ENV, server["url"] if source == "http mirror" else str(folder))
    model = checkpoints.load_checkpoint(NAME)
    assert server["log"] == ([] if source == "folder mirror" else [f"/{FILE}"])
    assert files_under(tmp_path / "root") == ["checkpoints", f"checkpoints/{FILE}"]
    assert isinstance(model, WideResNet) and not model.training
    assert all(b.drop == 0.3 for b in model.blocks)
    mean, std = torch.tensor(checkpoints.OE_CIFAR_MEAN), torch.tensor(checkpoints.OE_CIFAR_STD)
    assert torch.equal(model.mean.flatten(), mean.float()) and torch.equal(model.std.flatten(), std.float())

    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    xn = (x - mean.float().view(1, 3, 1, 1)) / std.float().view(1, 3, 1, 1)   # pytorch-ood's model takes this
    with torch.no_grad():
        theirs_logits, theirs_pen = net(xn), net.features(xn)
        ours_logits, ours_pen = model(x), model.pool(model.features(x))
        same_input, same_map = torch.equal(model.normalize(x), xn), torch.equal(model.body(xn), net.feature_maps(xn))
    assert theirs_logits.abs().max() > 1 and theirs_logits.std(0).mean() > 0.01   # not a degenerate network
    assert same_input and same_map            # bit for bit up to the last feature map (B, 128, 8, 8)
    # pooling: our mean over (H, W) and their avg_pool2d(8) sum in another order (relative differences ~4e-7)
    torch.testing.assert_close(ours_pen, theirs_pen, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=1e-5, atol=1e-5)
    # and not the same by accident: another network's weights give other outputs
    other = authors_network(seed=7)
    with torch.no_grad():
        assert (other(xn) - ours_logits).abs().max() > 1e-2


def test_a_key_that_does_not_map_is_an_error_naming_it():
    model = WideResNet(num_classes=10, depth=40, widen=2)
    state = authors_network().state_dict()
    good = checkpoints.from_authors_layout(state, model)
    assert set(good) == set(model.state_dict())
    extra = {**state, "block1.layer.0.extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"0 keys missing \(\), 1 left over \(block1.layer.0.extra.weight\)"):
        checkpoints.from_authors_layout(extra, model)
    short = {k: v for k, v in state.items() if not k.startswith("block3.layer.5.")}
    with pytest.raises(ValueError, match=r"keys missing \(blocks.17.bn1.weight, "):
        checkpoints.from_authors_layout(short, model)
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}   # saved by PyTorch < 0.4.1
    assert set(checkpoints.from_authors_layout(old, model)) == set(model.state_dict())


# ---------------------------------------------------------------------------------------------- failures

def test_a_tampered_file_fails_its_checksum_and_leaves_nothing(server, monkeypatch, tmp_path):
    payload = authors_file(authors_network())
    register(monkeypatch, payload, f"{server['url']}/{FILE}")
    tampered = bytearray(payload)
    tampered[len(tampered) // 2] ^= 0xFF
    (server["folder"] / FILE).write_bytes(bytes(tampered))
    with pytest.raises(ChecksumError) as e:
        checkpoints.load_checkpoint(NAME)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{NAME}: its URL served {server['url']}/{FILE} with sha256 ")
    assert f"expected {hashlib.sha256(payload).hexdigest()}" in msg and "nothing was written" in msg
    assert files_under(tmp_path / "root") == []                  # no partial file, no folder made for it
    # a tampered copy already under the data root is not used either, and the error says so
    dest = tmp_path / "root" / "checkpoints" / FILE
    dest.parent.mkdir(parents=True)
    dest.write_bytes(bytes(tampered))
    register(monkeypatch, payload, closed_port_url())
    with pytest.raises(ChecksumError, match=f"{dest} has sha256 .* the file is corrupt .*no source had a good copy"):
        checkpoints.load_checkpoint(NAME)
    assert dest.read_bytes() == bytes(tampered)                  # left as it was, for the user to look at


def test_a_missing_file_without_network_is_one_line(server, monkeypatch, tmp_path):
    payload = authors_file(authors_network())
    url = closed_port_url()
    register(monkeypatch, payload, url)
    with pytest.raises(DataMissingError) as e:
        checkpoints.fetch_checkpoint(NAME)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"published checkpoint {NAME}: download of {url} to ")
    assert f"sha256:{hashlib.sha256(payload).hexdigest()}" in msg and f"${registry.MIRRORS_ENV}" in msg
    assert files_under(tmp_path / "root") == []
    with pytest.raises(DataMissingError, match="no mirror is configured and download is off"):
        checkpoints.fetch_checkpoint(NAME, download=False)
    assert server["log"] == []


# ---------------------------------------------------------------------------------------------- baselines

TOY_PROFILE = """\
toy:
  benchmark:
    id: synthetic
    ood: {textures: synthetic-textures, noise: synthetic-noise}
    num_classes: 10
    data_seed: 0
    sizes: {train: 100, test: 40, ood: 30}
  model: {name: wrn40_2, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}
  recipes:
    scratch: {epochs: 1, batch_size: 32, lr: 0.1, weight_decay: 5.0e-4, schedule: cosine}
  method:
    ce: {recipe: scratch}
  evaluate:
    params: {knn: {k: 5}}
    batch_size: 50
"""


@pytest.fixture
def toy_params(tmp_path):
    """A params file beside a profiles folder holding one toy profile (the synthetic benchmark at a few images)."""
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "toy.yaml").write_text(TOY_PROFILE)
    params = tmp_path / "params.yaml"
    params.write_text("profile: toy\nseeds: [0]\nseed_workers: 1\ndevice: cpu\n")
    return params


def test_evaluate_scores_a_published_checkpoint_without_training(server, monkeypatch, tmp_path, toy_params, capsys):
    """``python -m ood evaluate --checkpoint``: every registered scorer on the profile's sets, with the network
    served by a mirror folder; the ID accuracy is pytorch-ood's network's on the same images."""
    net = authors_network()
    payload = authors_file(net)
    register(monkeypatch, payload, closed_port_url(), dataset="synthetic")
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / FILE).write_bytes(payload)
    monkeypatch.setenv(registry.MIRRORS_ENV, str(tmp_path / "mirror"))
    out = tmp_path / "out"
    rc = main(["evaluate", "--params", str(toy_params), "--profile", "toy", "--checkpoint", NAME, "--device", "cpu",
               "--run-dir", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    m = pd.read_csv(out / "metrics.csv")
    assert list(m.scorer.unique()) == list(SCORERS) and set(m.method) == {NAME}
    assert set(m.ood_set) == {"textures", "noise", "average"} and m[["fpr95", "auroc"]].notna().all().all()
    scores = np.load(out / "scores.npz")
    assert len(scores["energy/id"]) == 40 and len(scores["odin/noise"]) == 30
    info = json.loads((out / "checkpoint.json").read_text())
    assert info["checksum"] == f"sha256:{hashlib.sha256(payload).hexdigest()}" and info["name"] == NAME
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json", "metrics.csv", "reference.csv", "reference.md",
                                                     "scores.npz"]   # no model.pt
    assert "the authors' weights, our evaluation" in (out / "reference.md").read_text()

    test = load("synthetic", "test", tmp_path / "synthetic-root", seed=0, n=40)   # the profile's ID test set
    x = test.images.float().div(255)
    mean = torch.tensor(checkpoints.OE_CIFAR_MEAN).float().view(1, 3, 1, 1)
    std = torch.tensor(checkpoints.OE_CIFAR_STD).float().view(1, 3, 1, 1)
    with torch.no_grad():
        acc = 100 * (net((x - mean) / std).argmax(1) == test.labels).float().mean().item()
    assert m.id_accuracy.iloc[0] == pytest.approx(acc, abs=1e-3)
    assert f"{NAME} (the authors' weights): ID accuracy {acc:.2f}%" in printed.out


def test_evaluate_and_fit_detector_refuse_a_checkpoint_of_another_data_set(server, tmp_path, toy_params, capsys):
    rc = main(["evaluate", "--params", str(toy_params), "--profile", "toy", "--checkpoint",
               "energy_cifar10_wrn_pretrained", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: published checkpoint 'energy_cifar10_wrn_pretrained' was trained on cifar10 (10 "
                               "classes, 32 px), but profile 'toy' has benchmark id 'synthetic'; pick a profile whose "
                               "ID set is cifar10, or a checkpoint of synthetic"]
    rc = main(["fit-detector", "--params", str(toy_params), "--checkpoint", "energy_cifar10_wrn_pretrained",
               "--out", str(tmp_path / "never.pt")])
    assert rc == 2 and capsys.readouterr().err.startswith("error: --checkpoint energy_cifar10_wrn_pretrained needs "
                                                          "--profile (one of toy)")
    assert not (tmp_path / "never.pt").exists()


def test_evaluate_without_network_ends_with_one_error_line(server, monkeypatch, tmp_path, toy_params, capsys):
    register(monkeypatch, authors_file(authors_network()), closed_port_url(), dataset="synthetic")
    rc = main(["evaluate", "--params", str(toy_params), "--profile", "toy", "--checkpoint", NAME, "--device", "cpu",
               "--run-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith(f"error: published checkpoint {NAME}: download of ")
    assert "Connection refused" in err[-1] and not (tmp_path / "out").exists()
    assert files_under(tmp_path / "root") == []


def test_fit_detector_from_a_published_checkpoint(server, monkeypatch, tmp_path, toy_params, capsys):
    payload = authors_file(authors_network())
    register(monkeypatch, payload, f"{server['url']}/{FILE}", dataset="synthetic")
    (server["folder"] / FILE).write_bytes(payload)
    out = tmp_path / "det.pt"
    rc = main(["fit-detector", "--params", str(toy_params), "--profile", "toy", "--checkpoint", NAME, "--scorer",
               "energy", "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    det = Detector.load(out)
    assert det.provenance["method"] == NAME and det.provenance["profile"] == "toy"
    assert det.provenance["checkpoint_sha256"] == hashlib.sha256(payload).hexdigest()
    assert det.model_spec == checkpoints.model_spec(NAME) and det.model_spec["kwargs"] == {"drop": 0.3}
    assert server["log"] == [f"/{FILE}"]


# ---------------------------------------------------------------------------------------------- as a method's run

def test_install_makes_every_seeds_run_folder_the_published_network(server, monkeypatch, tmp_path):
    """The ``published`` stage's function: each seed's ``model.pt`` loads (``ood.models.load_model``, as the evaluate
    stage and a fine-tune read it) into a network with pytorch-ood's logits, under the profile's model spec of the
    method (CE's dropout 0.3; GReg's 0: dropout has no weights), with the entry's provenance beside it."""
    from ood import config, run_checkpoint
    from ood.models import load_model

    net = authors_network()
    payload = authors_file(net, prefix=True)
    (server["folder"] / FILE).write_bytes(payload)
    register(monkeypatch, payload, f"{server['url']}/{FILE}")
    params = config.load_params()
    written = run_checkpoint.install_checkpoint(params, "cifar10", "ce", NAME, seeds=[0, 2], run_dir=tmp_path / "ce")
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["ce/seeds/0/model.pt", "ce/seeds/2/model.pt"]
    assert server["log"] == [f"/{FILE}"]   # fetched once, then read from the data root
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    mean, std = torch.tensor(checkpoints.OE_CIFAR_MEAN).float(), torch.tensor(checkpoints.OE_CIFAR_STD).float()
    with torch.no_grad():
        theirs = net((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    for seed in (0, 2):
        d = tmp_path / "ce" / "seeds" / str(seed)
        model = load_model(d)
        assert all(b.drop == 0.3 for b in model.blocks)      # profiles/cifar10.yaml: ce: {model: {drop: 0.3}}
        with torch.no_grad():
            torch.testing.assert_close(model(x), theirs, rtol=1e-4, atol=1e-4)
        info = json.loads((d / "checkpoint.json").read_text())
        assert info["checksum"] == checkpoints.CHECKPOINTS[NAME].file.checksum and "not trained here" in info["weights"]
        assert not (d / "history.csv").exists()
    greg = run_checkpoint.install_checkpoint(params, "cifar10", "greg", NAME, seeds=[0], run_dir=tmp_path / "greg")
    assert all(b.drop == 0.0 for b in load_model(greg[0].parent).blocks)


def test_install_refuses_a_profile_whose_network_or_id_set_differs(server, monkeypatch, tmp_path):
    from ood import config, run_checkpoint

    payload = authors_file(authors_network())
    register(monkeypatch, payload, f"{server['url']}/{FILE}")
    params = config.load_params()
    with pytest.raises(config.ParamError, match=r"set the profile's model block to the authors' network"):
        run_checkpoint.install_checkpoint(params, "cifar10-cpu", "ce", NAME, seeds=[0], run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="trained on cifar10 .* but profile 'cifar100' has benchmark id 'cifar100'"):
        run_checkpoint.install_checkpoint(params, "cifar100", "ce", NAME, seeds=[0], run_dir=tmp_path / "b")
    assert server["log"] == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_published_notebooks_parameters_are_checked():
    from ood import config, run_checkpoint

    ns = {"profile": "cifar10", "method": "ce", "checkpoint": "energy_cifar10_wrn_pretrained", "seeds": None}
    assert run_checkpoint.check_install_params(ns, before=set())["checkpoint"] == "energy_cifar10_wrn_pretrained"
    for bad, msg in (({"chekpoint": "x"}, "unknown parameter 'chekpoint'"),
                     ({"method": "nope"}, "invalid value 'nope' for parameter 'method'"),
                     ({"checkpoint": "nope"}, "unknown published checkpoint 'nope'"),
                     ({"seeds": [0, 0]}, "invalid value \\[0, 0\\] for parameter 'seeds'")):
        with pytest.raises(config.ParamError, match=msg):
            run_checkpoint.check_install_params({**ns, **bad}, before=set())


def test_test_digests_replace_only_named_entries_and_reject_unknown_ones(tmp_path, monkeypatch):
    digest = "sha256:" + "ab" * 32
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"oe_cifar10_wrn_oe_tune": digest}))
    monkeypatch.setattr(checkpoints, "CHECKPOINTS", dict(checkpoints.CHECKPOINTS))
    before = dict(checkpoints.CHECKPOINTS)
    checkpoints.apply_test_checksums(good)
    assert checkpoints.CHECKPOINTS["oe_cifar10_wrn_oe_tune"].file.checksum == digest
    assert all(checkpoints.CHECKPOINTS[n] == before[n] for n in before if n != "oe_cifar10_wrn_oe_tune")
    for table in ({"nope": digest}, {"oe_cifar10_wrn_oe_tune": "md5:00"}):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(table))
        with pytest.raises(ValueError, match="must map a registered checkpoint"):
            checkpoints.apply_test_checksums(bad)


def test_the_reference_table_puts_our_evaluation_beside_the_papers_numbers_for_that_network():
    """Every ood/reference.csv row of the network (CIFAR-10, WRN-40-2, CE; the six-set average) gets our number and
    the difference, labelled with the weights, the evaluation and both protocols; an unreported network gets none."""
    from ood import config, run_checkpoint
    from ood.reference import load_reference

    params = config.load_params()
    ours = pd.DataFrame([{"benchmark": "cifar10", "method": "energy_cifar10_wrn_pretrained", "seed": 0,
                          "scorer": s, "ood_set": o, "fpr95": v, "auroc": 90.0}
                         for s, v in (("msp", 50.0), ("energy", 30.0), ("odin", 36.0), ("mahalanobis", 40.0))
                         for o in ("svhn", "average")])
    t = run_checkpoint.reference_table(ours, params, "cifar10", "energy_cifar10_wrn_pretrained")
    ref = load_reference()
    want = ref[(ref.benchmark == "cifar10") & (ref.model == "wrn40_2") & (ref.train_method == "ce")
               & (ref.ood_set == "average")]
    assert len(t) == len(want) > 0
    e = t[(t.scorer == "energy") & (t.metric == "fpr95")].iloc[0]
    paper = want[(want.scorer == "energy") & (want.metric == "fpr95")]["value"].item()
    assert e.ours == 30.0 and e.paper == paper and e["diff"] == pytest.approx(30.0 - paper)
    assert e.weights == "the authors' (energy_cifar10_wrn_pretrained)" and e.evaluation.startswith("ours (cifar10")
    assert e.protocol == want[(want.scorer == "energy") & (want.metric == "fpr95")]["protocol"].item()
    none = run_checkpoint.reference_table(ours.assign(benchmark="cifar100"), params, "cifar100",
                                          "oe_cifar100_wrn_oe_tune")
    assert list(none.columns)[:3] == ["weights", "evaluation", "train_method"]
