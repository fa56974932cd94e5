"""The training loop's semantics, each against an oracle written here from its definition (nothing of ``ood``
computes an expected value): the learning rate each optimizer step uses, what reaches the optimizer and
hand-computed SGD / Adam / AdamW updates, the batches the model sees (augmentation on/off, crop padding), the
random streams (seed, epoch, resume), the initial weights (scratch and fine-tune) and the outlier rows of a step.

Everything runs on tiny 8x8 images through a width-2 SmallNet (a run takes milliseconds). What a step sees is
recorded by wrapping :meth:`ood.train.Training.step`, which every step of :func:`ood.train.train` goes through.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ood import losses
from ood.config import TrainConfig
from ood.data import ArrayDataset
from ood.models import SmallNet
from ood.train import Training, prepare_training, train

MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.2, 0.3]
SPEC = {"name": "smallnet", "num_classes": 3, "mean": MEAN, "std": STD, "kwargs": {"width": 2}}
HW = 8


def _data(n=24, seed=0, labelled=True):
    """``n`` random 8x8 images with every pixel in 1..255 (never 0: a zero-padded border is recognisable), so that
    every image and every crop of one is unique; labels cycle through 3 classes (or -1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 256, (n, 3, HW, HW), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 3 if labelled else torch.full((n,), -1)
    return ArrayDataset(name=f"toy{seed}", images=x, labels=y, classes=("a", "b", "c"))


def _cfg(**kw):
    base = dict(method="toy", terms={"ce": {}}, epochs=2, batch_size=8, lr=0.05, weight_decay=5e-4, seed=1,
                channels_last=False, augment=False)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def _to_uint8(x):
    """A batch the loader produced (uint8 / 255 as float32) back to its uint8 pixels, exactly."""
    back = (x.double() * 255).round().to(torch.uint8)
    assert torch.equal(back.float().div(255), x)
    return back


@pytest.fixture
def steps(monkeypatch):
    """Every call of Training.step: the learning rate of each parameter group when the step starts, the epoch, the
    ID batch and labels, and the input of each forward through the network body (SmallNet's body is ``stem``)."""
    calls = []
    real = Training.step

    def spy(self, x_id, y, **kw):
        rec = {"lrs": [g["lr"] for g in self.opt.param_groups], "epoch": kw["epoch"], "x": x_id.detach().clone(),
               "y": y.detach().clone(), "body_inputs": []}
        keep = lambda m, inp, out: rec["body_inputs"].append(inp[0].detach().clone())
        hook = self.model.stem.register_forward_hook(keep)
        try:
            out = real(self, x_id, y, **kw)
        finally:
            hook.remove()
        calls.append(rec)
        return out

    monkeypatch.setattr(Training, "step", spy)
    return calls


# ---------------------------------------------------------------------------------------------------------------
# 1. the learning rate of every optimizer step
# ---------------------------------------------------------------------------------------------------------------

def _lr_oracle(cfg, t, steps_per_epoch):
    """The learning rate of global step ``t`` (0-based, counted over the epochs): linear warm-up (t + 1) / W over the
    first W = warmup_epochs * steps_per_epoch steps, else the schedule: cosine as the Energy-OE code's
    ``cosine_annealing(step, total, 1, 1e-6 / lr)`` over T = epochs * steps_per_epoch steps, step decay by gamma at
    each milestone epoch reached, or constant."""
    T = cfg.epochs * steps_per_epoch
    W = cfg.warmup_epochs * steps_per_epoch
    if t < W:
        return cfg.lr * (t + 1) / W
    if cfg.schedule == "cosine":
        lo = 1e-6 / cfg.lr
        return cfg.lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t / T)))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** len([m for m in cfg.milestones if t // steps_per_epoch >= m])
    return cfg.lr


# n = 40 images, batch 8: 5 batches per epoch; "cap" runs 2 of them (a steps_per_epoch below the epoch's length).
# lr = 2e-5 makes the cosine's floor 1e-6 / lr = 5 % of the peak, far above the tolerance.
LR_CASES = {
    "cosine": dict(schedule="cosine", lr=2e-5, epochs=3),
    "cosine_cap": dict(schedule="cosine", lr=2e-5, epochs=3, steps_per_epoch=2),
    "step": dict(schedule="step", lr=0.04, epochs=4, milestones=[1, 3], gamma=0.3),
    "step_cap": dict(schedule="step", lr=0.04, epochs=4, milestones=[2, 3], gamma=0.5, steps_per_epoch=3),
    "constant": dict(schedule="constant", lr=0.03, epochs=2),
    "warmup_cosine_cap": dict(schedule="cosine", lr=2e-5, epochs=3, warmup_epochs=1, steps_per_epoch=2),
    "warmup_step": dict(schedule="step", lr=0.04, epochs=3, milestones=[2], gamma=0.1, warmup_epochs=1),
}


@pytest.mark.parametrize("case", list(LR_CASES))
def test_learning_rate_of_every_step_follows_the_schedule(tmp_path, steps, case):
    cfg = _cfg(**LR_CASES[case], momentum=0.0, weight_decay=0.0)
    data = _data(40)
    spe = min(40 // 8, cfg.steps_per_epoch or 40 // 8)
    hist = train(cfg, SPEC, data, tmp_path, progress=False)
    assert len(steps) == cfg.epochs * spe
    assert [s["epoch"] for s in steps] == [e for e in range(cfg.epochs) for _ in range(spe)]
    for t, s in enumerate(steps):
        want = _lr_oracle(cfg, t, spe)
        assert s["lrs"] == pytest.approx([want], rel=1e-12, abs=0), (case, t)
    # the history's lr is the one the epoch's last step used
    assert hist["lr"].tolist() == pytest.approx([_lr_oracle(cfg, (e + 1) * spe - 1, spe) for e in range(cfg.epochs)],
                                                rel=1e-12)
    # the case is not degenerate: the lr changes where the schedule says it does
    if cfg.schedule != "constant" or cfg.warmup_epochs:
        assert len({round(s["lrs"][0] / cfg.lr, 12) for s in steps}) > 2


# ---------------------------------------------------------------------------------------------------------------
# 2. what reaches the optimizer, and the updates it makes
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, cls, group", [
    (dict(optimizer="sgd", momentum=0.8, nesterov=True, weight_decay=3e-4, lr=0.07), torch.optim.SGD,
     dict(momentum=0.8, nesterov=True, weight_decay=3e-4, lr=0.07)),
    (dict(optimizer="sgd", momentum=0.6, nesterov=False, weight_decay=1e-3, lr=0.02), torch.optim.SGD,
     dict(momentum=0.6, nesterov=False, weight_decay=1e-3, lr=0.02)),
    (dict(optimizer="adam", weight_decay=2e-4, lr=1e-3), torch.optim.Adam, dict(weight_decay=2e-4, lr=1e-3)),
    (dict(optimizer="adamw", weight_decay=0.05, lr=3e-3), torch.optim.AdamW, dict(weight_decay=0.05, lr=3e-3)),
], ids=["sgd_nesterov", "sgd_plain_momentum", "adam", "adamw"])
def test_optimizer_settings_reach_the_optimizer(kw, cls, group):
    run = prepare_training(_cfg(**kw), SPEC, _data())
    assert type(run.opt) is cls
    assert len(run.opt.param_groups) == 1
    g = run.opt.param_groups[0]
    for k, v in group.items():
        assert g[k] == v, k
    assert [id(p) for p in g["params"]] == [id(p) for p in run.model.parameters()]


def _ce_grads(model, x, y):
    """d CE(model(x), y) / d parameters, by autograd on a copy in train mode (BatchNorm on the batch statistics)."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def _batch(seed=3, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, HW, HW, generator=g), torch.arange(n) % 3


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, True), (0.9, False)])
def test_sgd_steps_equal_the_hand_computed_updates(momentum, nesterov):
    """Two Training.step calls on fixed batches against SGD written out: g = grad + wd w; buf = g, then m buf + g;
    the step is g + m buf (Nesterov) or buf (heavy ball), or g itself (momentum 0: w - lr (grad + wd w))."""
    lr, wd = 0.1, 0.05
    run = prepare_training(_cfg(optimizer="sgd", lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd,
                                schedule="constant"), SPEC, _data())
    ref = copy.deepcopy(run.model).train()
    run.model.train()
    bufs = None
    for k in range(2):
        x, y = _batch(seed=10 + k)
        grads = _ce_grads(ref, x, y)
        with torch.no_grad():
            params = list(ref.parameters())
            gs = [g + wd * p for g, p in zip(grads, params)]
            bufs = gs if bufs is None else [momentum * b + g for b, g in zip(bufs, gs)]
            for p, g, b in zip(params, gs, bufs):
                d = g if momentum == 0 else (g + momentum * b if nesterov else b)
                p.sub_(lr * d)
        run.step(x, y, epoch=0, generator=torch.Generator().manual_seed(0))
    ours, want = run.model.state_dict(), ref.state_dict()
    for name in want:
        torch.testing.assert_close(ours[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
    # not vacuous: weight decay moved every conv weight by more than the tolerance
    w0 = prepare_training(_cfg(), SPEC, _data()).model.state_dict()
    assert (ours["fc.weight"] - w0["fc.weight"]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_first_adam_step_by_hand_l2_vs_decoupled_decay(name):
    """The first Adam step is lr * m_hat / (sqrt(v_hat) + eps) = lr * g / (|g| + eps) per entry. Adam adds the L2
    term to the gradient (g = grad + wd w); AdamW decays the weight separately (w (1 - lr wd) - lr grad / (|grad| +
    eps)). wd = 0.5 makes the two differ by about lr * wd * |w|, far above the tolerance."""
    lr, wd, eps = 0.01, 0.5, 1e-8
    run = prepare_training(_cfg(optimizer=name, lr=lr, weight_decay=wd, schedule="constant"), SPEC, _data())
    ref = copy.deepcopy(run.model).train()
    run.model.train()
    x, y = _batch()
    grads = _ce_grads(ref, x, y)
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads):
            if name == "adam":
                g = g + wd * p
                p.sub_(lr * g / (g.abs() + eps))
            else:
                p.mul_(1 - lr * wd).sub_(lr * g / (g.abs() + eps))
    run.step(x, y, epoch=0, generator=torch.Generator().manual_seed(0))
    ours, want = run.model.state_dict(), ref.state_dict()
    for k in want:
        torch.testing.assert_close(ours[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


# ---------------------------------------------------------------------------------------------------------------
# 3. the batches the model sees: shuffling, augmentation on and off, crop padding
# ---------------------------------------------------------------------------------------------------------------

def _row_index(data):
    return {bytes(img.numpy().tobytes()): i for i, img in enumerate(data.images)}


def _sources(data, rec):
    """Indices into ``data`` of the rows of a recorded batch (each must be one of its images, unchanged)."""
    index = _row_index(data)
    x = _to_uint8(rec["x"])
    idx = [index.get(bytes(img.numpy().tobytes())) for img in x]
    assert None not in idx, "a batch row is not one of the training images"
    return idx


def test_without_augmentation_batches_are_the_shuffled_training_images(tmp_path, steps):
    data = _data(24)
    train(_cfg(epochs=2, augment=False), SPEC, data, tmp_path, progress=False)
    assert len(steps) == 2 * 3
    orders = []
    for e in range(2):
        idx = [i for s in steps[3 * e:3 * e + 3] for i in _sources(data, s)]
        ys = torch.cat([s["y"] for s in steps[3 * e:3 * e + 3]])
        assert sorted(idx) == list(range(24))                      # each image once per epoch (24 = 3 x 8)
        assert torch.equal(ys, data.labels[idx])                   # labels travel with their images
        orders.append(idx)
    assert orders[0] != list(range(24)) and orders[1] != list(range(24))   # shuffled
    assert orders[0] != orders[1]                                          # re-shuffled each epoch


def test_a_capped_epoch_is_a_fresh_random_subset_each_epoch(tmp_path, steps):
    """steps_per_epoch = 1 of 3 batches: each epoch trains on 8 distinct images, another 8 each epoch."""
    data = _data(24)
    train(_cfg(epochs=3, steps_per_epoch=1), SPEC, data, tmp_path, progress=False)
    assert len(steps) == 3
    subsets = [frozenset(_sources(data, s)) for s in steps]
    assert all(len(s) == 8 for s in subsets)
    assert len(set(subsets)) == 3


def _crops(img, pad):
    """Every (2 pad + 1)^2 * 2 zero-padded crop of ``img`` (C, H, W), with and without a horizontal flip."""
    C, H, W = img.shape
    p = F.pad(img, (pad, pad, pad, pad))
    out = []
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            win = p[:, top:top + H, left:left + W]
            out += [((top, left, False), win), ((top, left, True), win.flip(-1))]
    return out


_CROPS: dict = {}   # the last data set's crops: (id of its images, pad) -> (images, labels of the crops, crops)


def _find_crop(row, data, pad):
    """(source index, (top, left, flip)) of every way ``row`` is a padded crop / flip of an image of ``data``."""
    key = (id(data.images), pad)
    if key not in _CROPS:
        hows = [(i, how) for i, img in enumerate(data.images) for how, _ in _crops(img, pad)]
        wins = torch.stack([win for img in data.images for _, win in _crops(img, pad)])
        _CROPS.clear()
        _CROPS[key] = (data.images, hows, wins)
    _, hows, wins = _CROPS[key]
    same = (wins == row).flatten(1).all(1)
    return [hows[j] for j in same.nonzero().flatten().tolist()]


@pytest.mark.parametrize("pad", [1, 2])
def test_with_augmentation_every_row_is_a_padded_crop_or_flip_of_its_source(tmp_path, steps, pad):
    data = _data(32)
    train(_cfg(epochs=1, batch_size=8, augment=True, crop_pad=pad), SPEC, data, tmp_path, progress=False)
    assert len(steps) == 4
    found, changed = [], 0
    for s in steps:
        for row, y in zip(_to_uint8(s["x"]), s["y"]):
            hits = _find_crop(row, data, pad)
            assert len(hits) >= 1, f"a row is no crop with padding {pad} (nor its flip) of any training image"
            assert len({i for i, _ in hits}) == 1                # one source image
            i, how = hits[0]
            assert int(y) == int(data.labels[i])
            found.append((i, how))
            changed += not any(h == (pad, pad, False) for _, h in hits)
    assert sorted(i for i, _ in found) == list(range(32))       # a permutation of the set, as without augmentation
    assert changed >= 16                                        # most rows are not the image itself
    assert {h[2] for _, h in found} == {False, True}            # flipped and not flipped
    # every offset 0 .. 2 pad occurs, vertically and horizontally (32 draws each: missing one has odds below 1 %)
    assert {h[0] for _, h in found} == set(range(2 * pad + 1))
    assert {h[1] for _, h in found} == set(range(2 * pad + 1))


def test_augmentation_changes_what_the_model_sees_and_the_trained_weights(tmp_path, steps):
    data = _data(16)
    train(_cfg(epochs=1, augment=False), SPEC, data, tmp_path / "off", progress=False)
    plain = [s["x"] for s in steps]
    steps.clear()
    train(_cfg(epochs=1, augment=True), SPEC, data, tmp_path / "on", progress=False)
    aug = [s["x"] for s in steps]
    assert len(plain) == len(aug) == 2
    assert any(not torch.equal(a, b) for a, b in zip(plain, aug))
    wa, wb = _weights(tmp_path / "off"), _weights(tmp_path / "on")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa if wa[k].is_floating_point())


# ---------------------------------------------------------------------------------------------------------------
# 4. random streams: (seed, epoch), reproducibility and resume
# ---------------------------------------------------------------------------------------------------------------

def _orders(data, steps, spe):
    return [[i for s in steps[spe * e:spe * (e + 1)] for i in _sources(data, s)] for e in range(len(steps) // spe)]


def test_same_seed_same_run_other_seed_other_stream(tmp_path, steps):
    data, aux = _data(24), _data(32, seed=9, labelled=False)
    kw = dict(epochs=2, terms={"ce": {}, "oe": {}}, out_batch_size=8, augment=True)
    train(_cfg(seed=3, **kw), SPEC, data, tmp_path / "a", aux=aux, progress=False)
    xa = [s["x"] for s in steps]
    outa = [s["body_inputs"][0][8:] for s in steps]
    steps.clear()
    train(_cfg(seed=3, **kw), SPEC, data, tmp_path / "b", aux=aux, progress=False)
    xb = [s["x"] for s in steps]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(torch.equal(a, b) for a, b in zip(xa, xb))
    steps.clear()
    train(_cfg(seed=4, **kw), SPEC, data, tmp_path / "c", aux=aux, progress=False)
    xc = [s["x"] for s in steps]
    outc = [s["body_inputs"][0][8:] for s in steps]
    wc = _weights(tmp_path / "c")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())
    assert not torch.equal(xa[0], xc[0])          # the data stream depends on the seed, not only the initial weights
    assert not any(torch.equal(a, c) for a, c in zip(outa, outc))          # and so do the outlier draws


def test_epoch_stream_depends_on_seed_and_epoch_only(tmp_path, steps):
    """Epoch e's batches are a function of (seed, e): another lr or number of epochs leaves them unchanged, the
    next epoch and another seed change them. A fine-tune of one fixed checkpoint with two seeds (same initial
    weights) ends at different weights: the seed reaches the stream itself."""
    data = _data(24)
    train(_cfg(epochs=2, lr=0.05), SPEC, data, tmp_path / "a", progress=False)
    a = _orders(data, steps, 3)
    steps.clear()
    train(_cfg(epochs=3, lr=0.01), SPEC, data, tmp_path / "b", progress=False)
    b = _orders(data, steps, 3)
    steps.clear()
    train(_cfg(epochs=2, seed=2), SPEC, data, tmp_path / "c", progress=False)
    c = _orders(data, steps, 3)
    assert b[:2] == a
    assert a[0] != a[1] and b[1] != b[2]
    assert c[0] != a[0] and c[1] != a[1]
    # fine-tunes of the same checkpoint with two seeds
    for seed in (5, 6):
        train(_cfg(epochs=1, seed=seed, init="a"), SPEC, data, tmp_path / f"ft{seed}", init_dir=tmp_path / "a",
              progress=False)
    w5, w6 = _weights(tmp_path / "ft5"), _weights(tmp_path / "ft6")
    assert any(not torch.equal(w5[k], w6[k]) for k in w5 if w5[k].is_floating_point())


def test_resume_after_one_epoch_is_bit_identical(tmp_path, steps):
    """Outliers, augmentation, momentum, warm-up + cosine and a capped epoch: stopping after epoch 1 and rerunning in
    the same folder gives the weights, the history's lr and the very batches of an uninterrupted run."""
    data, aux = _data(32), _data(40, seed=9, labelled=False)
    cfg = _cfg(epochs=3, terms={"ce": {}, "oe": {}}, out_batch_size=8, augment=True, warmup_epochs=1,
               steps_per_epoch=3, momentum=0.9, nesterov=True, lr=0.05)
    full = train(cfg, SPEC, data, tmp_path / "full", aux=aux, progress=False)
    x_full = [s["x"] for s in steps]
    steps.clear()
    h1 = train(cfg, SPEC, data, tmp_path / "resumed", aux=aux, progress=False, stop_after_epochs=1)
    assert len(h1) == 1 and len(steps) == 3
    h2 = train(cfg, SPEC, data, tmp_path / "resumed", aux=aux, progress=False)
    assert len(steps) == 9 and [s["epoch"] for s in steps[3:]] == [1] * 3 + [2] * 3
    assert all(torch.equal(a, s["x"]) for a, s in zip(x_full, steps))
    assert h2["lr"].tolist() == full["lr"].tolist()
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ---------------------------------------------------------------------------------------------------------------
# 5. initial weights: scratch and fine-tune
# ---------------------------------------------------------------------------------------------------------------

def test_scratch_run_starts_from_manual_seed_then_the_model():
    torch.manual_seed(12345)
    torch.rand(100)                                            # the global generator is elsewhere when training starts
    run = prepare_training(_cfg(seed=7), SPEC, _data())
    torch.manual_seed(7)
    want = SmallNet(num_classes=3, mean=MEAN, std=STD, width=2).state_dict()
    got = run.model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    other = prepare_training(_cfg(seed=8), SPEC, _data()).model.state_dict()
    assert not torch.equal(other["fc.weight"], got["fc.weight"])


def test_finetune_starts_from_the_init_weights_with_its_own_normalization(tmp_path, steps):
    """The init checkpoint is written here by hand (weights of another seed, perturbed, and other input statistics);
    the fine-tune's model starts from its weights and keeps the mean/std of its own model spec."""
    torch.manual_seed(99)
    init_model = SmallNet(num_classes=3, mean=[0.1, 0.2, 0.3], std=[0.9, 0.8, 0.7], width=2)
    with torch.no_grad():
        for p in init_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        for m in init_model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    init_sd = {k: v.clone() for k, v in init_model.state_dict().items()}
    (tmp_path / "ce").mkdir()
    torch.save({"state_dict": init_sd, "model": {**SPEC, "mean": [0.1, 0.2, 0.3], "std": [0.9, 0.8, 0.7]},
                "meta": {"method": "ce"}}, tmp_path / "ce" / "model.pt")
    cfg = _cfg(init="ce", epochs=1, seed=7)
    run = prepare_training(cfg, SPEC, _data(), run_dir=tmp_path / "ft", init_dir=tmp_path / "ce")
    got = run.model.state_dict()
    for k in init_sd:
        if k in ("mean", "std"):
            continue
        assert torch.equal(got[k], init_sd[k]), k
    assert got["mean"].flatten().tolist() == pytest.approx(MEAN, rel=1e-7)
    assert got["std"].flatten().tolist() == pytest.approx(STD, rel=1e-7)
    # the first training step normalizes with the fine-tune's statistics: body input = (x - MEAN) / STD
    train(cfg, SPEC, _data(), tmp_path / "ft", init_dir=tmp_path / "ce", progress=False)
    s = steps[0]
    m, sd = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(s["body_inputs"][0], (s["x"] - m) / sd, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# 6. outlier terms: one forward of cat(x_id, x_out)
# ---------------------------------------------------------------------------------------------------------------

class _Probe(losses.LossTerm):
    """A zero-valued outlier term that records what the step handed it."""

    name = "probe"
    needs_outliers = True
    needs_input_grad = False
    seen: list = []

    def value(self, out):
        _Probe.seen.append({"n_id": out.n_id, "n_out": out.n_out, "logits": out.logits.detach().clone(),
                            "xn": out.xn.detach().clone(), "y": out.y.clone()})
        return out.logits.sum() * 0


@pytest.mark.parametrize("augment", [False, True])
def test_outliers_are_concatenated_after_the_id_rows_in_one_forward(tmp_path, steps, monkeypatch, augment):
    monkeypatch.setitem(losses.TERMS, "probe", _Probe)
    monkeypatch.setattr(_Probe, "seen", [])
    data, aux = _data(24), _data(40, seed=9, labelled=False)
    bs, nout = 8, 5
    train(_cfg(epochs=1, terms={"ce": {}, "probe": {}}, batch_size=bs, out_batch_size=nout, augment=augment,
               crop_pad=1), SPEC, data, tmp_path, aux=aux, progress=False)
    assert len(steps) == len(_Probe.seen) == 3
    m, sd = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    far, drawn = 0, []
    for s, seen in zip(steps, _Probe.seen):
        assert len(s["body_inputs"]) == 1                          # one forward per step
        xn = s["body_inputs"][0]
        assert xn.shape[0] == bs + nout
        assert seen["n_id"] == bs and seen["n_out"] == nout and seen["logits"].shape == (bs + nout, 3)
        assert torch.equal(seen["y"], s["y"])
        torch.testing.assert_close(xn, seen["xn"])
        torch.testing.assert_close(xn[:bs], (s["x"] - m) / sd, rtol=1e-6, atol=1e-6)   # ID rows first
        x_out = _to_uint8_close(xn[bs:] * sd + m)
        drawn.append(x_out)
        for row in x_out:
            if augment:
                hits = _find_crop(row, aux, 4)                     # outliers keep padding 4 (crop_pad is the ID's)
                assert hits, "an outlier row is no padded crop / flip of an auxiliary image"
                far += all(max(abs(h[0] - 4), abs(h[1] - 4)) > 1 for _, h in hits)
            else:
                assert any(torch.equal(row, img) for img in aux.images), "an outlier row is not an auxiliary image"
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])   # fresh outliers each step
    if augment:
        assert far > 0                                             # some outlier crop is beyond the ID's padding 1


def _to_uint8_close(x):
    """Pixels in [0, 1] recovered from a normalized-then-unnormalized batch (float error well below 1/255)."""
    v = x.double() * 255
    assert (v - v.round()).abs().max() < 1e-3
    return v.round().clamp(0, 255).to(torch.uint8)
