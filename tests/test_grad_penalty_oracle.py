"""The GReg gradient penalty against oracles written from the formulas, sharing no code with ood/losses.py.

* ``authors``: what Greg-OOD's ``train_sea.py`` (``--jacobianLoss``) computes, written out here: a second forward
  of the batch (BatchNorm in train mode, as in their training loop), the scalar
  ``L = -mean_id relu(m_in - E) + mean_out relu(E - m_out)`` with ``E = -logsumexp(logits)``, its gradient with
  respect to the normalized batch (``torch.autograd.functional.jacobian`` of a scalar is that gradient), the L2 norm
  of each row, and the mean over all rows. Batches of 64 + 64 and 64 + 128, train mode, compared to 1e-6.
* ``paper``: per sample, one image at a time in eval mode (no coupling through batch statistics), the mean of
  ``||dE(x_i)/dx_i||_2`` over the samples on the right side of their margin (ID ``E < m_in``, outliers
  ``E > m_out``).
"""
import copy

import pytest
import torch

from ood.losses import StepOutputs, build_term
from ood.models import SmallNet


def _net(seed=0):
    torch.manual_seed(seed)
    m = SmallNet(10, width=8, depth=1).double()
    with torch.no_grad():  # non-trivial BatchNorm running statistics, then train mode as in training
        m.train()
        m(torch.rand(16, 3, 32, 32, dtype=torch.float64))
    return m


def _energy(logits):
    return -torch.logsumexp(logits, dim=1)


def _batch(n_id, n_out, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_id + n_out, 3, 32, 32, generator=g, dtype=torch.float64)


def _margins(model, x, n_id):
    with torch.no_grad():
        e = _energy(copy.deepcopy(model)(x))
    return float(e[:n_id].median()), float(e[n_id:].median())


def _ours(model, x, n_id, **params):
    xn = model.normalize(x).requires_grad_(True)
    fmap = model.body(xn)
    pen = model.pool(fmap)
    logits = model.head(pen)
    out = StepOutputs(model=model, xn=xn, fmap=fmap, pen=pen, logits=logits, y=torch.zeros(n_id, dtype=torch.long),
                      n_id=n_id)
    return build_term("grad_penalty", **params)(out)


def _authors(model, x, n_id, m_in, m_out):
    xn = model.normalize(x).detach().requires_grad_(True)
    e = _energy(model.head(model.pool(model.body(xn))))
    loss = -torch.relu(m_in - e[:n_id]).mean() + torch.relu(e[n_id:] - m_out).mean()
    (jac,) = torch.autograd.grad(loss, xn)
    return jac.flatten(1).norm(dim=1).mean()


@pytest.mark.parametrize("n_id, n_out", [(64, 64), (64, 128)])
def test_authors_scaling_is_train_sea_py_penalty_in_train_mode(n_id, n_out):
    model = _net()
    x = _batch(n_id, n_out)
    m_in, m_out = _margins(model, x, n_id)
    want = _authors(copy.deepcopy(model).train(), x, n_id, m_in, m_out)
    got = _ours(copy.deepcopy(model).train(), x, n_id, weight=1.0, m_in=m_in, m_out=m_out, scaling="authors")
    assert want.item() > 0
    assert abs(got.item() - want.item()) <= 1e-6 * max(1.0, abs(want.item())), (got.item(), want.item())


def test_paper_scaling_is_the_mean_per_sample_gradient_norm_over_selected_samples():
    model = _net().eval()
    n_id, n_out = 6, 5
    x = _batch(n_id, n_out, seed=2)
    m_in, m_out = _margins(model, x, n_id)
    norms, selected = [], []
    for i in range(x.shape[0]):
        xi = model.normalize(x[i:i + 1]).detach().requires_grad_(True)
        e = _energy(model.head(model.pool(model.body(xi))))[0]
        (g,) = torch.autograd.grad(e, xi)
        norms.append(float(g.norm()))
        selected.append(bool(e < m_in) if i < n_id else bool(e > m_out))
    assert 0 < sum(selected) < len(selected)
    want = sum(n for n, s in zip(norms, selected) if s) / sum(selected)
    got = _ours(model, x, n_id, weight=2.5, m_in=m_in, m_out=m_out, scaling="paper")
    assert got.item() == pytest.approx(2.5 * want, rel=1e-9)


PAPER_PROFILES = ["cifar10", "cifar100", "imagenet", "cifar10-offline"]


@pytest.mark.parametrize("profile", PAPER_PROFILES)
@pytest.mark.parametrize("method", ["greg", "greg_plus"])
@pytest.mark.parametrize("n_id, n_out", [(64, 64), (64, 128)])
def test_every_paper_profile_computes_the_authors_penalty_at_the_papers_weight(profile, method, n_id, n_out):
    """The paper profiles' GReg and GReg+ terms, as configured (weight, margins, default scaling), are Greg-OOD's
    ``--jacobianLoss 1`` penalty."""
    from ood import config

    params = config.load_params()
    term = config.method_config(params, method, profile).terms["grad_penalty"]
    assert term.get("weight", 1.0) == 1.0, "the papers' lambda is 1 (--jacobianLoss 1 in every GReg script)"
    model = _net(seed=3)
    # energies spread over about [-100, -5] so that both margins (-25/-7) select some samples and leave others:
    # images of amplitudes 0..1, a steep head, and biases lowered by 8 (which raises every energy by 8)
    with torch.no_grad():
        model.fc.weight.mul_(100.0)
        model.fc.bias.sub_(8.0)
    n = n_id + n_out
    amp = torch.linspace(0, 1, n, dtype=torch.float64)[torch.randperm(n, generator=torch.Generator().manual_seed(5))]
    x = _batch(n_id, n_out, seed=4) * amp.view(-1, 1, 1, 1)
    with torch.no_grad():
        e = _energy(copy.deepcopy(model).train()(x))
    m_in, m_out = term.get("m_in", -25.0), term.get("m_out", -7.0)
    assert 0 < int((e[:n_id] < m_in).sum()) < n_id and 0 < int((e[n_id:] > m_out).sum()) < n_out
    want = _authors(copy.deepcopy(model).train(), x, n_id, m_in, m_out)
    got = _ours(copy.deepcopy(model).train(), x, n_id, **term)
    assert abs(got.item() - want.item()) <= 1e-6 * max(1.0, abs(want.item())), (got.item(), want.item())
