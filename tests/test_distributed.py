"""Training under torch.distributed (gloo, 2 processes on the CPU): the engine torchrun drives.

Oracle of the equality test: one process on the same global batch (``ood.train.train`` with no torchrun
environment), on a network without BatchNorm, so that nothing couples the rows of a batch across the shards; the
two runs then differ only in the order of floating-point sums (one backward over 32 + 32 rows vs two backwards over
16 + 16 and an all-reduce), hence the tolerance 1e-5 (relative and absolute) after 4 SGD steps.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ood.config import TrainConfig
from ood.data import ArrayDataset
from ood.models import SmallNet, register_model
from ood.train import train

SPEC = {"name": "smallnet_nobn", "num_classes": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "kwargs": {"width": 8}}
GREG = {"ce": {}, "energy_margin": {"weight": 0.1, "m_in": -6.0, "m_out": -2.0},
        "grad_penalty": {"weight": 1.0, "m_in": -6.0, "m_out": -2.0}}


def _nobn(**kw):
    """SmallNet with its BatchNorm layers removed (rows independent, so 2 shards = 1 batch up to rounding)."""
    model = SmallNet(**kw)

    def strip(module):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
            else:
                strip(child)
    strip(model)
    return model


register_model("smallnet_nobn")(_nobn)


def _data(n=128, seed=0, labelled=True):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = (torch.rand(n, 3, 32, 32, generator=g) * 100).to(torch.uint8)
    x[y == 1, 0] += 120
    x[y == 2, 2] += 120
    return ArrayDataset(name="toy", images=x, labels=y if labelled else torch.full((n,), -1), classes=("a", "b", "c"))


def _cfg(**kw):
    base = dict(method="toy", terms=GREG, epochs=2, batch_size=32, out_batch_size=32, lr=0.05, weight_decay=5e-4,
                seed=3, steps_per_epoch=2, channels_last=False)
    base.update(kw)
    return TrainConfig(**base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str, cfg_kw: dict, kill_rank_at_epoch: int | None):
    """One rank: the environment torchrun would set, then ood.train.train."""
    from ood import train as training

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if kill_rank_at_epoch is not None and rank == 1:   # a rank dies at the start of that epoch (after a checkpoint)
        real = training._epoch_generator

        def dying(seed, epoch):
            if epoch == kill_rank_at_epoch:
                os._exit(17)
            return real(seed, epoch)
        training._epoch_generator = dying
    try:
        train(_cfg(**cfg_kw), SPEC, _data(), run_dir, aux=_data(256, seed=1, labelled=False), device="cpu",
              progress=False)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(run_dir: Path, kill_rank_at_epoch: int | None = None, **cfg_kw):
    mp.spawn(_worker, args=(2, _free_port(), str(run_dir), cfg_kw, kill_rank_at_epoch), nprocs=2, join=True)


def _weights(run: Path) -> dict:
    return torch.load(run / "model.pt", weights_only=True)["state_dict"]


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-5) for k in a)


@pytest.mark.slow
def test_two_processes_give_the_weights_of_one_on_the_same_global_batch(tmp_path, monkeypatch):
    """GReg (CE + energy margin + gradient penalty, random outliers) for 4 steps: DDP over 2 gloo processes, each
    with 16 ID + 16 outlier rows, ends where one process with 32 + 32 does; the weights moved (not a no-op)."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    one = train(_cfg(), SPEC, _data(), tmp_path / "one", aux=_data(256, seed=1, labelled=False), device="cpu",
                progress=False)
    _spawn(tmp_path / "two")
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert _close(a, b), max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    start = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["history"]
    assert len(start) == 2 and len(one) == 2
    hist = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["history"]
    for col in ("loss_ce", "loss_energy_margin", "loss_grad_penalty"):   # the logged means, reduced over the ranks
        assert hist[-1][col] == pytest.approx(start[-1][col], rel=1e-4), col
    init = _nobn(num_classes=3, mean=[0.5] * 3, std=[0.25] * 3, width=8).state_dict()
    assert not _close(a, {k: v for k, v in init.items()})


@pytest.mark.slow
def test_greg_plus_runs_under_ddp_and_only_rank_0_writes(tmp_path):
    """The GReg+ sampler picks each rank's 16 outliers from its own 96 of the 192-candidate pool."""
    _spawn(tmp_path / "gp", sampler={"name": "energy_cluster", "pool_factor": 6}, epochs=1)
    files = sorted(p.name for p in (tmp_path / "gp").iterdir())
    assert files == ["checkpoint.pt", "history.csv", "model.pt"]
    hist = torch.load(tmp_path / "gp" / "checkpoint.pt", weights_only=True)["history"]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in hist[-1].items() if k.startswith("loss_"))


@pytest.mark.slow
def test_resume_after_a_killed_rank_gives_the_uninterrupted_weights(tmp_path):
    """Rank 1 dies at the start of epoch 2 (after rank 0 wrote epoch 1's checkpoint); torch stops the other rank.
    The same command again resumes every rank from the checkpoint and ends with the weights of a run that was never
    interrupted."""
    _spawn(tmp_path / "straight")
    with pytest.raises(mp.ProcessExitedException):
        _spawn(tmp_path / "killed", kill_rank_at_epoch=1)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "killed" / "model.pt").exists()
    _spawn(tmp_path / "killed")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_batch_that_does_not_split_evenly_is_refused(tmp_path):
    from ood.data import Loader
    from ood.distributed import World

    with pytest.raises(ValueError, match="batch size of 33 does not split evenly over 2 processes"):
        Loader(_data(), 33, world=World(0, 2, 0))


def test_shards_are_disjoint_and_make_up_the_global_batch():
    """Each rank's rows of every batch are its slice of the one-process batch (same images, same crops and flips)."""
    from ood.data import Loader
    from ood.distributed import World

    ds = _data(96)
    batches = {}
    for w in (World(), World(0, 2, 0), World(1, 2, 1)):
        loader = Loader(ds, 32, shuffle=True, augment=True, drop_last=True, world=w,
                        generator=torch.Generator().manual_seed(5))
        batches[w.rank, w.size] = [x for x, _ in loader]
    for whole, r0, r1 in zip(batches[0, 1], batches[0, 2], batches[1, 2]):
        assert torch.equal(torch.cat([r0, r1]), whole)


def test_torchrun_command_trains_greg_and_leaves_one_checkpoint_per_seed(pipeline_root, tmp_path):
    """docs/scaling-out.md's command, on the pipeline's CE checkpoints (the throw-away copy the suite's dvc repro
    made)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    run = tmp_path / "greg-ddp"
    p = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "ood", "train", "--profile",
                        "synthetic", "--method", "greg", "--epochs", "1", "--steps-per-epoch", "3", "--device", "cpu",
                        "--run-dir", str(run)], cwd=pipeline_root, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OOD_ROOT": str(pipeline_root), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    from ood.config import load_params

    seeds = sorted(d.name for d in (run / "seeds").iterdir())
    assert seeds == [str(s) for s in load_params(pipeline_root / "params.yaml")["seeds"]]   # seed 0 in the one-seed run
    for s in seeds:
        assert sorted(f.name for f in (run / "seeds" / s).iterdir()) == ["checkpoint.pt", "history.csv", "model.pt"]
        ck = torch.load(run / "seeds" / s / "checkpoint.pt", weights_only=True)
        assert ck["epoch"] == 1 and ck["config"]["steps_per_epoch"] == 3
    assert p.stdout.count("greg seed") == len(seeds)   # printed once (rank 0), not once per rank


def _eval_worker(rank: int, world: int, port: int, out: str):
    import numpy as np

    from ood.models import load_model

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        res = _evaluate(load_model(Path(out) / "model"))
        np.savez(Path(out) / f"rank{rank}.npz", **{k.replace("/", "|"): v for k, v in res.scores.items()})
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _evaluate(model):
    from ood.evaluate import evaluate

    return evaluate(model, id_train=_data(90, seed=4), id_test=_data(45, seed=5),
                    ood_sets={"a": _data(37, seed=6, labelled=False), "b": _data(1, seed=7, labelled=False)},
                    scorers={"energy": {}, "knn": {"k": 3}, "odin": {}, "mahalanobis": {}}, benchmark="toy",
                    method="toy", batch_size=8, progress=False)


def test_evaluation_split_over_two_processes_gives_the_scores_of_one(tmp_path, monkeypatch):
    """Each rank extracts features (and runs ODIN) for its share of every set (sizes 90, 45, 37 split unevenly; a
    1-image set is scored whole on every rank); the gathered scores equal one process's (oracle: evaluate with no
    torchrun environment), on every rank, up to the rounding of other batch boundaries."""
    import numpy as np

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    from ood.models import build_model

    model = build_model("smallnet", 3, [0.5] * 3, [0.25] * 3, width=8)
    (tmp_path / "model").mkdir()
    torch.save({"state_dict": model.state_dict(), "model": {"name": "smallnet", "num_classes": 3, "mean": [0.5] * 3,
                                                            "std": [0.25] * 3, "kwargs": {"width": 8}}},
               tmp_path / "model" / "model.pt")
    from ood.models import load_model

    one = _evaluate(load_model(tmp_path / "model")).scores
    mp.spawn(_eval_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = dict(np.load(tmp_path / f"rank{rank}.npz"))
        assert sorted(k.replace("|", "/") for k in got) == sorted(one)
        for k, v in one.items():
            np.testing.assert_allclose(got[k.replace("/", "|")], v, rtol=1e-4, atol=1e-4, err_msg=k)


@pytest.mark.slow
def test_a_profile_with_distributed_trains_its_stage_through_torchrun(tmp_path, capsys):
    """``distributed: {nproc_per_node: 2}`` in a profile: ``run_train.train_method`` (what the train stage's notebook
    calls) launches ``torchrun -m ood train`` with the same params file and returns the histories it wrote."""
    import shutil

    import yaml

    from ood import config, run_train

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "profiles", tmp_path / "profiles")
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    prof = tmp_path / "profiles" / "synthetic.yaml"
    block = yaml.safe_load(prof.read_text())
    block["synthetic"]["distributed"] = {"nproc_per_node": 2}
    prof.write_text(yaml.safe_dump(block))
    params = config.load_params(tmp_path / "params.yaml")
    assert run_train.distributed_procs(params, "synthetic") == 2
    cfg = config.method_config(params, "ce", "synthetic", epochs=1, steps_per_epoch=2)
    hist = run_train.train_method(params, "synthetic", cfg, device="cpu", run_dir=tmp_path / "run", seeds=[0],
                                  progress=False)
    assert list(hist["seed"]) == [0] and list(hist["epoch"]) == [1] and "test_accuracy" in hist
    assert sorted(f.name for f in (tmp_path / "run" / "seeds" / "0").iterdir()) == ["checkpoint.pt", "history.csv",
                                                                                    "model.pt"]
    assert "ce seed 0: 1 epochs" in capsys.readouterr().out
    block["synthetic"]["distributed"] = {"nproc_per_node": 0}
    prof.write_text(yaml.safe_dump(block))
    with pytest.raises(config.ParamError, match="distributed.nproc_per_node"):
        params = config.load_params(tmp_path / "params.yaml")
        run_train.train_method(params, "synthetic", config.method_config(params, "ce", "synthetic"), device="cpu",
                               run_dir=tmp_path / "x", seeds=[0])


def test_sync_batchnorm_on_the_cpu_stops_with_what_to_do(tmp_path):
    """torch.nn.SyncBatchNorm has no CPU kernel: a distributed CPU run that asks for it stops at the start, on every
    rank, naming the option and the way out (per-process statistics), and writes nothing."""
    with pytest.raises(mp.ProcessRaisedException, match="sync_batchnorm needs CUDA.*set sync_batchnorm: false"):
        _spawn(tmp_path / "sync", sync_batchnorm=True, epochs=1)
    assert not (tmp_path / "sync").exists() or not any((tmp_path / "sync").iterdir())
