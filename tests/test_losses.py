"""Loss terms on hand-made tensors; the GReg penalty against the authors' jacobian path and finite
differences; BFM background selection on a constructed feature map; every method composition trains."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ood.losses import (
    TERMS,
    StepOutputs,
    background_mask,
    build_term,
    build_terms,
    energy,
    grad_penalty_reference,
    position_logits,
)
from ood.methods import METHODS
from ood.models import SmallNet
from ood.sampling import build_sampler


def _out(logits, y=None, n_id=None, fmap=None, model=None, xn=None, epoch=0):
    logits = torch.as_tensor(logits, dtype=torch.float64).requires_grad_(True)
    n_id = logits.shape[0] if n_id is None else n_id
    y = torch.zeros(n_id, dtype=torch.long) if y is None else torch.as_tensor(y)
    fmap = torch.zeros(logits.shape[0], 1, 1, 1, dtype=torch.float64) if fmap is None else fmap
    return StepOutputs(model=model, xn=xn, fmap=fmap, pen=fmap.mean((2, 3)), logits=logits, y=y, n_id=n_id,
                       epoch=epoch)


def _logits_with_energy(e, k=2):
    """Logits (c, ..., c) with K equal entries have energy -(c + log K): pick c for a wanted energy."""
    c = -torch.as_tensor(e, dtype=torch.float64) - math.log(k)
    return c[:, None].repeat(1, k)


# --- ce / oe / energy_margin ------------------------------------------------------------------

def test_ce_uniform_logits_is_log_k():
    out = _out(torch.zeros(3, 4), y=[0, 1, 3])
    assert build_term("ce")(out).item() == pytest.approx(math.log(4))
    assert build_term("ce", weight=2.0)(out).item() == pytest.approx(2 * math.log(4))


def test_oe_hand_computed_and_empty():
    # one ID row (ignored), one outlier with logits (log 3, 0, 0): logsumexp = log 5, mean = log(3)/3
    out = _out([[9.0, 0.0, 0.0], [math.log(3), 0.0, 0.0]], n_id=1)
    assert build_term("oe")(out).item() == pytest.approx(0.5 * (math.log(5) - math.log(3) / 3))
    # minimum: log K
    assert build_term("oe", weight=1.0)(_out(torch.zeros(2, 3), n_id=1)).item() == pytest.approx(math.log(3))
    empty = _out(torch.randn(3, 3), n_id=3)
    v = build_term("oe")(empty)
    v.backward()
    assert v.item() == 0.0 and torch.all(empty.logits.grad == 0)


def test_energy_margin_indicators():
    m_in, m_out = -10.0, -4.0
    # ID energies: -12 (inside margin, 0), -7 (3 above m_in -> 9); outliers: -2 (above m_out, 0), -6 (2 below -> 4)
    logits = _logits_with_energy([-12.0, -7.0, -2.0, -6.0])
    out = _out(logits, n_id=2)
    torch.testing.assert_close(energy(out.logits), torch.tensor([-12.0, -7.0, -2.0, -6.0], dtype=torch.float64))
    v = build_term("energy_margin", weight=0.1, m_in=m_in, m_out=m_out)(out)
    assert v.item() == pytest.approx(0.1 * (9 / 2 + 4 / 2))
    # no outliers: only the ID part
    v = build_term("energy_margin", weight=1.0, m_in=m_in, m_out=m_out)(_out(logits[:2]))
    assert v.item() == pytest.approx(9 / 2)


# --- grad_penalty ------------------------------------------------------------------------------

def _model64(width=8, train=False, seed=0):
    torch.manual_seed(seed)
    m = SmallNet(3, width=width).double()
    with torch.no_grad():  # non-trivial BN running statistics for eval mode
        m.train()
        m(torch.rand(8, 3, 32, 32, dtype=torch.float64))
    return m.train(train)


def _step(model, x, n_id, y=None):
    xn = model.normalize(x).requires_grad_(True)
    fmap = model.body(xn)
    pen = model.pool(fmap)
    logits = model.head(pen)
    y = torch.arange(n_id) % model.num_classes if y is None else y
    return StepOutputs(model=model, xn=xn, fmap=fmap, pen=pen, logits=logits, y=y, n_id=n_id)


def _median_margins(model, x, n_id):
    with torch.no_grad():
        e = energy(model(x))
    return float(e[:n_id].median()), float(e[n_id:].median())


@pytest.mark.parametrize("train", [False, True], ids=["eval", "bn_train"])
@pytest.mark.parametrize("scaling", ["paper", "authors", "expectation"])
def test_grad_penalty_equals_jacobian_reference(scaling, train):
    """Eval mode: the exact per-sample penalty. BN train mode: both paths carry the same cross-sample terms,
    so the single-backward penalty still equals the authors' jacobian path."""
    model = _model64(train=train)
    g = torch.Generator().manual_seed(1)
    x_id, x_out = torch.rand(5, 3, 32, 32, generator=g, dtype=torch.float64), torch.rand(4, 3, 32, 32, generator=g,
                                                                                         dtype=torch.float64)
    m_in, m_out = _median_margins(model, torch.cat([x_id, x_out]), 5)
    term = build_term("grad_penalty", weight=1.7, m_in=m_in, m_out=m_out, scaling=scaling)
    v = term(_step(model, torch.cat([x_id, x_out]), 5))
    ga = torch.autograd.grad(v, list(model.parameters()))
    r = grad_penalty_reference(model, x_id, x_out, m_in=m_in, m_out=m_out, scaling=scaling, weight=1.7)
    gb = torch.autograd.grad(r, list(model.parameters()))
    assert v.item() > 0
    torch.testing.assert_close(v, r, rtol=1e-8, atol=1e-12)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    sel_in = term.last["selected_in"].item()
    assert 0 < sel_in < 1  # the median margin selects some, not all


def test_grad_penalty_matches_finite_differences():
    """Eval mode, 'paper' scaling: the penalty is the mean over selected samples of ||dE/dxn||; each norm is the
    directional derivative of E along its own unit gradient (central differences, float64)."""
    model = _model64(train=False)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    n_id = 4
    m_in, m_out = _median_margins(model, x, n_id)
    out = _step(model, x, n_id)
    v = build_term("grad_penalty", weight=1.0, m_in=m_in, m_out=m_out, scaling="paper")(out)
    with torch.no_grad():
        e = energy(model(x))
        sel = torch.cat([e[:n_id] < m_in, e[n_id:] > m_out])
    xn = model.normalize(x).detach()
    norms = []
    for i in torch.nonzero(sel).flatten().tolist():
        xi = xn[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(energy(model.head(model.pool(model.body(xi)))).sum(), xi)
        u = gi / gi.norm()
        h = 1e-4
        with torch.no_grad():
            fd = (energy(model.head(model.pool(model.body(xn[i:i + 1] + h * u))))
                  - energy(model.head(model.pool(model.body(xn[i:i + 1] - h * u))))) / (2 * h)
        assert fd.item() == pytest.approx(gi.norm().item(), rel=1e-6)
        norms.append(fd.item())
    assert 0 < len(norms) < 6
    assert v.item() == pytest.approx(sum(norms) / len(norms), rel=1e-6)


def test_grad_penalty_empty_selection_is_zero_and_backprops():
    model = _model64(train=True)
    out = _step(model, torch.rand(6, 3, 32, 32, dtype=torch.float64), 4)
    v = build_term("grad_penalty", m_in=-1e6, m_out=1e6)(out)  # nobody on the right side of a margin
    v.backward()
    assert v.item() == 0.0
    assert all(torch.isfinite(p.grad).all() and torch.all(p.grad == 0)
               for p in model.parameters() if p.grad is not None)


def test_grad_penalty_needs_input_grad():
    model = _model64()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    xn = model.normalize(x)
    fmap = model.body(xn)
    out = StepOutputs(model, xn, fmap, model.pool(fmap), model.head(model.pool(fmap)), torch.zeros(2, dtype=torch.long),
                      2)
    with pytest.raises(ValueError, match="requires_grad"):
        build_term("grad_penalty")(out)


def test_grad_penalty_under_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    model = SmallNet(3, width=8)
    x = torch.rand(8, 3, 32, 32)
    term = build_term("grad_penalty", m_in=100.0, m_out=-100.0)  # select everyone
    ref = term(_step(model, x, 4)).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _step(model, x, 4)
        out.logits = out.logits.float()
        low = term(out).item()
    assert abs(low - ref) / ref < 1e-2


# --- background (BFM) --------------------------------------------------------------------------

def _identity_head(k=3):
    fc = nn.Linear(k, k).double()
    with torch.no_grad():
        fc.weight.copy_(torch.eye(k, dtype=torch.float64))
        fc.bias.zero_()
    return fc


def _bg_fmap():
    # one image, C = K = 3, 2x2 positions; ground-truth class 0 has logits [[5, 1], [3, 0.5]] at the positions
    f = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    f[0, 0] = torch.tensor([[5.0, 1.0], [3.0, 0.5]])
    f[0, 1] = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    f[0, 2] = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    return f


def test_background_mask_lowest_ground_truth_positions():
    fc, f, y = _identity_head(), _bg_fmap(), torch.tensor([0])
    m = background_mask(f, fc, y, "ratio", ratio=0.5)
    assert m.tolist() == [[[False, True], [False, True]]]  # logits 1 and 0.5 are the lowest two
    assert background_mask(f, fc, y, "ratio", ratio=0.25).tolist() == [[[False, False], [False, True]]]
    # softmax probability of class 0: positions (0,1) and (1,1) are below 0.5, (1,0) 3 vs 4 -> also below
    p = position_logits(f, fc).softmax(1)[0, 0]
    expected = (p < 0.5).tolist()
    assert background_mask(f, fc, y, "prob_threshold", threshold=0.5, score="softmax")[0].tolist() == expected
    assert expected == [[False, True], [True, True]]
    # the ground-truth class matters: for class 2 the lowest position is a different one
    assert background_mask(f, fc, torch.tensor([2]), "ratio", ratio=0.25).sum() == 1


def test_background_term_values():
    fc, f = _identity_head(), _bg_fmap().requires_grad_(True)
    model = SimpleNamespace(fc=fc)
    out = _out(position_logits(f, fc).mean((2, 3)).detach(), y=[0], fmap=f, model=model)
    n01, n11 = math.sqrt(1 + 4), math.sqrt(0.25 + 4)  # norms of the two background positions
    t = build_term("background", weight=0.1, ratio=0.5)
    assert t(out).item() == pytest.approx(0.1 * (n01 + n11) / 2)
    assert build_term("background", weight=1.0, ratio=0.5, norm="l2sq")(out).item() == pytest.approx((5 + 4.25) / 2)
    hinge = build_term("background", weight=1.0, ratio=0.5, norm="hinge", margin=2.1)(out).item()
    assert hinge == pytest.approx((max(n01 - 2.1, 0) + max(n11 - 2.1, 0)) / 2)
    # gradient only reaches the selected positions
    t(out).backward()
    assert torch.all(f.grad[0, :, 0, 0] == 0) and torch.all(f.grad[0, :, 1, 0] == 0) and f.grad[0, 0, 0, 1] > 0


def test_background_warmup_and_empty_selection():
    fc = _identity_head()
    f = _bg_fmap()
    f[0, :, 1, 1] = 0  # a dead position (all-zero feature): its norm must not give a NaN gradient
    f.requires_grad_(True)
    out = _out(torch.zeros(1, 3), y=[0], fmap=f, model=SimpleNamespace(fc=fc), epoch=1)
    assert build_term("background", warmup_epochs=2)(out).item() == 0.0
    v = build_term("background", selection="prob_threshold", threshold=-1e9)(out)
    v.backward()
    assert v.item() == 0.0 and torch.all(f.grad == 0)
    f.grad = None
    build_term("background", ratio=0.5)(out).backward()
    assert torch.isfinite(f.grad).all()


# --- parameters and compositions ---------------------------------------------------------------

@pytest.mark.parametrize("name,params,match", [
    ("nope", {}, "allowed: ce, oe"),
    ("oe", {"wieght": 1.0}, "allowed: weight"),
    ("ce", {"weight": -1.0}, "weight"),
    ("energy_margin", {"m_in": -5.0, "m_out": -7.0}, "m_in < m_out"),
    ("grad_penalty", {"scaling": "mine"}, "'paper', 'authors', 'expectation'"),
    ("background", {"ratio": 0.0}, "ratio"),
    ("background", {"ratio": 1.5}, "ratio"),
    ("background", {"norm": "l1"}, "'l2', 'l2sq', 'hinge'"),
    ("background", {"selection": "topk"}, "'ratio', 'prob_threshold'"),
    ("background", {"warmup_epochs": 1.5}, "warmup_epochs"),
    ("oe", {"weight": float("nan")}, "weight"),
])
def test_bad_parameters_raise(name, params, match):
    with pytest.raises(ValueError, match=match):
        build_term(name, **params)


def test_build_terms_checks_params():
    terms = build_terms(METHODS["greg"].terms, {"grad_penalty": {"m_in": -12.0}})
    assert [t.name for t in terms] == ["ce", "energy_margin", "grad_penalty"] and terms[2].m_in == -12.0
    with pytest.raises(ValueError, match="not in the composition"):
        build_terms(["ce"], {"oe": {}})


def _method_params(name):
    # margins around the energies of a fresh 3-class SmallNet (about -1.1)
    return {"energy_margin": {"m_in": -1.5, "m_out": -0.5}, "grad_penalty": {"m_in": -0.9, "m_out": -1.3},
            "background": {"weight": 0.1}}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_on_a_fixed_batch(method):
    spec = METHODS[method]
    assert set(spec.terms) <= set(TERMS)
    torch.manual_seed(0)
    model = SmallNet(3, width=8)
    g = torch.Generator().manual_seed(0)
    x_id, y = torch.rand(6, 3, 32, 32, generator=g), torch.arange(6) % 3
    x_id[y == 1, 0] += 0.5
    pool = torch.rand(24, 3, 32, 32, generator=g)
    params = {k: v for k, v in _method_params(method).items() if k in spec.terms}
    terms = build_terms(spec.terms, params)
    needs_out = any(t.needs_outliers for t in terms) or spec.sampler is not None
    sampler = build_sampler(spec.sampler, pool_factor=4) if spec.sampler else None
    fixed_out = pool[:6]

    def loss_on(x_out):
        x = torch.cat([x_id, x_out]) if needs_out else x_id
        xn = model.normalize(x)
        if any(t.needs_input_grad for t in terms):
            xn.requires_grad_(True)
        fmap = model.body(xn)
        pen = model.pool(fmap)
        out = StepOutputs(model, xn, fmap, pen, model.head(pen), y, 6)
        return torch.stack([t(out) for t in terms]).sum()

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    before = loss_on(fixed_out).item()
    for step in range(10):
        x_out = fixed_out
        if sampler is not None:
            idx = sampler.select(model, pool, 6, g)
            assert model.training and idx.shape == (6,) and len(set(idx.tolist())) == 6
            x_out = pool[idx] if step < 2 else fixed_out  # exercise the sampler, then train on the fixed batch
        loss = loss_on(x_out)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = loss_on(fixed_out).item()
    assert after < before, (method, before, after)
