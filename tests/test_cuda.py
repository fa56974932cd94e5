"""Training on CUDA (marked ``cuda``; skipped without a CUDA device): what only a GPU exercises - bf16 autocast,
channels_last on the device, the double backward of the gradient penalty there. ``scripts/gpu_check.py`` runs
them with ``pytest -m cuda``; the oracle is the same step on the CPU in fp32."""
import copy

import pytest
import torch

from ood.config import TrainConfig
from ood.data.arrays import ArrayDataset
from ood.train import _epoch_generator, prepare_training

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SPEC = {"name": "smallnet", "num_classes": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "kwargs": {}}
GREG = {"ce": {}, "energy_margin": {"weight": 0.1, "m_in": -1.5, "m_out": -0.5},
        "grad_penalty": {"weight": 1.0, "m_in": -0.9, "m_out": -1.3}}


def _data(n=64, seed=0, labelled=True):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    return ArrayDataset(name="toy", images=x, labels=y if labelled else torch.full((n,), -1), classes=("a", "b", "c"))


def _steps(device, amp, channels_last, n=3):
    cfg = TrainConfig(method="greg", terms=copy.deepcopy(GREG), epochs=1, batch_size=16, out_batch_size=16, lr=0.01,
                      seed=0, amp=amp, channels_last=channels_last, augment=False)
    run = prepare_training(cfg, SPEC, _data(), aux=_data(128, seed=1, labelled=False), device=device)
    g = _epoch_generator(0, 0)
    run.loader.generator = g
    losses = []
    for x, y in run.loader:
        values, _ = run.step(x, y, epoch=0, generator=g)   # one CPU stream, as run_epoch draws
        losses.append(float(torch.stack([v.float() for v in values]).sum()))
        if len(losses) == n:
            break
    return losses, {k: v.detach().float().cpu() for k, v in run.model.state_dict().items()}


def test_a_greg_step_on_cuda_in_fp32_matches_the_cpu():
    cpu_losses, cpu_w = _steps("cpu", amp=False, channels_last=False, n=1)
    gpu_losses, gpu_w = _steps("cuda", amp=False, channels_last=False, n=1)
    assert gpu_losses == pytest.approx(cpu_losses, rel=1e-3)
    for k in cpu_w:
        assert torch.allclose(gpu_w[k], cpu_w[k], rtol=1e-3, atol=1e-4), k


def test_bf16_autocast_and_channels_last_train_finite_and_close():
    fp32, _ = _steps("cuda", amp=False, channels_last=False)
    bf16, w = _steps("cuda", amp=True, channels_last=True)
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert all(torch.isfinite(v).all() for v in w.values())
    assert bf16[0] == pytest.approx(fp32[0], rel=5e-2)   # bf16 keeps about 3 significant digits
