"""The training loop: resume gives the same weights, NaN stops cleanly, checkpoints are safe to load."""
import pytest
import torch

from ood import losses
from ood.config import TrainConfig
from ood.data import ArrayDataset
from ood.models import load_model
from ood.train import TrainingError, train

SPEC = {"name": "smallnet", "num_classes": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "kwargs": {}}


def _data(n=96, seed=0, labelled=True):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = (torch.rand(n, 3, 32, 32, generator=g) * 100).to(torch.uint8)
    x[y == 1, 0] += 120  # learnable: class = colour offset
    x[y == 2, 2] += 120
    return ArrayDataset(name="toy", images=x, labels=y if labelled else torch.full((n,), -1), classes=("a", "b", "c"))


def _cfg(**kw):
    base = dict(method="toy", terms={"ce": {}}, epochs=3, batch_size=32, lr=0.05, weight_decay=5e-4, seed=1,
                channels_last=False)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("kw", [
    {},
    {"terms": {"ce": {}, "energy_margin": {"m_in": -5.0, "m_out": -2.0}, "grad_penalty": {"m_in": -5.0, "m_out": -2.0}},
     "out_batch_size": 16, "sampler": {"name": "energy_cluster"}},
], ids=["ce", "greg_plus"])
def test_resume_gives_identical_weights(tmp_path, kw):
    data, aux = _data(), _data(64, seed=5, labelled=False)
    cfg = _cfg(**kw)
    train(cfg, SPEC, data, tmp_path / "a", aux=aux, progress=False)
    h1 = train(cfg, SPEC, data, tmp_path / "b", aux=aux, progress=False, stop_after_epochs=1)
    assert len(h1) == 1 and not (tmp_path / "b" / "model.pt").exists()
    h2 = train(cfg, SPEC, data, tmp_path / "b", aux=aux, progress=False)
    assert len(h2) == 3
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_training_learns_and_model_loads(tmp_path):
    data = _data(192)
    h = train(_cfg(epochs=4), SPEC, data, tmp_path, id_test=_data(96, seed=3), progress=False)
    assert h["test_accuracy"].iloc[-1] > 60
    model = load_model(tmp_path)
    assert not model.training and model.num_classes == 3
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # plain tensors and Python values only
    assert blob["epoch"] == 4 and len(blob["history"]) == 4


class _NaNAfter(losses.LossTerm):
    name = "nan_after"
    needs_outliers = False
    needs_input_grad = False

    def __init__(self, epoch=1):
        super().__init__()
        self.epoch = epoch

    def __call__(self, out):
        v = out.logits.sum() * 0
        return v + float("nan") if out.epoch >= self.epoch else v


def test_nan_loss_stops_with_a_clear_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(losses.TERMS, "nan_after", _NaNAfter)
    cfg = _cfg(terms={"ce": {}, "nan_after": {"epoch": 1}})
    with pytest.raises(TrainingError, match=r"method 'toy' at epoch 2, step 1 .*last good checkpoint \(epoch 1\)"):
        train(cfg, SPEC, _data(), tmp_path, progress=False)
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert blob["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in blob["state_dict"].values() if v.is_floating_point())


def test_changed_configuration_does_not_resume(tmp_path, capsys):
    data = _data()
    train(_cfg(epochs=1), SPEC, data, tmp_path, progress=False)
    h = train(_cfg(epochs=2, lr=0.01), SPEC, data, tmp_path, progress=False)
    assert len(h) == 2
    assert "another configuration" in capsys.readouterr().out


def test_outlier_terms_without_aux_data_fail_early(tmp_path):
    cfg = _cfg(terms={"ce": {}, "oe": {}}, out_batch_size=16)
    with pytest.raises(TrainingError, match="auxiliary data"):
        train(cfg, SPEC, _data(), tmp_path, progress=False)


def test_finetune_starts_from_the_init_checkpoint(tmp_path):
    data = _data()
    train(_cfg(epochs=1), SPEC, data, tmp_path / "ce", progress=False)
    with pytest.raises(TrainingError, match="init_dir"):
        train(_cfg(epochs=1, init="ce"), SPEC, data, tmp_path / "ft", progress=False)
    with pytest.raises(TrainingError, match=r"nowhere/model.pt does not exist; train 'ce' first .*--init-dir"):
        train(_cfg(epochs=1, init="ce"), SPEC, data, tmp_path / "ft", init_dir=tmp_path / "nowhere", progress=False)
    h = train(_cfg(epochs=0, init="ce"), SPEC, data, tmp_path / "ft0", init_dir=tmp_path / "ce", progress=False)
    assert len(h) == 0
    a, b = _weights(tmp_path / "ce"), _weights(tmp_path / "ft0")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_keeps_its_own_input_statistics_and_dropout(tmp_path):
    """A method whose model block overrides mean/std (GReg on CIFAR-100) or drop (the OE baselines) loads the init
    checkpoint's weights but normalizes with its own statistics: the buffers come from its model spec."""
    data = _data()
    train(_cfg(epochs=1), SPEC, data, tmp_path / "ce", progress=False)
    spec = {**SPEC, "mean": [0.4, 0.45, 0.5], "std": [0.2, 0.21, 0.22]}
    train(_cfg(epochs=0, init="ce"), spec, data, tmp_path / "ft", init_dir=tmp_path / "ce", progress=False)
    a, b = _weights(tmp_path / "ce"), _weights(tmp_path / "ft")
    assert all(torch.equal(a[k], b[k]) for k in a if k not in ("mean", "std"))
    assert b["mean"].flatten().tolist() == pytest.approx([0.4, 0.45, 0.5])
    assert b["std"].flatten().tolist() == pytest.approx([0.2, 0.21, 0.22])
    m = load_model(tmp_path / "ft")
    assert m.mean.flatten().tolist() == pytest.approx([0.4, 0.45, 0.5])


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW)])
def test_recipe_optimizer_is_the_named_one(tmp_path, monkeypatch, name, cls):
    """optimizer: adam is torch.optim.Adam with L2 weight decay (Greg-OOD's ImageNet runs), not AdamW."""
    from ood import train as training

    made = []
    real = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer", lambda model, cfg: made.append(real(model, cfg)) or made[-1])
    train(_cfg(epochs=1, optimizer=name, lr=1e-3, weight_decay=0.0), SPEC, _data(), tmp_path / name, progress=False)
    assert type(made[0]) is cls


def test_steps_per_epoch_caps_the_epoch(tmp_path, monkeypatch):
    from ood import train as training

    calls = []
    real = training.train_step
    monkeypatch.setattr(training, "train_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(_cfg(epochs=2, batch_size=16), SPEC, _data(), tmp_path / "full", progress=False)
    assert len(calls) == 2 * (96 // 16)
    calls.clear()
    h = train(_cfg(epochs=2, batch_size=16, steps_per_epoch=2), SPEC, _data(), tmp_path / "cap", progress=False)
    assert len(calls) == 2 * 2 and len(h) == 2
    with pytest.raises(Exception, match="steps_per_epoch"):
        _cfg(steps_per_epoch=0)
