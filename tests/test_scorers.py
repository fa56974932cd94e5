"""Post-hoc scorers: closed forms on tiny hand-set models, invariances, and the higher-means-ID sign.

The tiny models are ``OODNet`` subclasses over a ``(B, C, 1, 1)`` input with mean 0 / std 1, so the
penultimate vector is the body's output at the single position and the logits are ``fc`` of it.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ood import scorers
from ood.metrics import auroc
from ood.models import OODNet


class IdentityNet(OODNet):
    """body = identity: the penultimate vector is the input itself; fc set by hand."""

    def __init__(self, weight, bias=None, mean=None, std=None):
        weight = torch.as_tensor(weight, dtype=torch.float32)
        k, d = weight.shape
        super().__init__(mean if mean is not None else [0.0] * d, std if std is not None else [1.0] * d)
        self.fc = nn.Linear(d, k, bias=bias is not None)
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            if bias is not None:
                self.fc.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def body(self, xn):
        return xn


class MLPNet(OODNet):
    """A 1x1 conv + ReLU body (non-negative penultimate features, like a real post-ReLU map)."""

    def __init__(self, d_in=2, hidden=16, k=2):
        super().__init__([0.0] * d_in, [1.0] * d_in)
        self.conv = nn.Conv2d(d_in, hidden, 1)
        self.fc = nn.Linear(hidden, k)

    def body(self, xn):
        return F.relu(self.conv(xn))


def img(h):
    """(B, D) -> (B, D, 1, 1) model input."""
    return torch.as_tensor(h, dtype=torch.float32)[:, :, None, None]


def fit(scorer, model, pen):
    pen = torch.as_tensor(pen, dtype=torch.float32)
    with torch.no_grad():
        logits = model.head(pen)
    return scorer.fit_features(pen, logits, logits.argmax(1), model)


def score(scorer, model, pen):
    pen = torch.as_tensor(pen, dtype=torch.float32)
    with torch.no_grad():
        return scorer.score_features(pen, model.head(pen), model)


# ----------------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------------

def test_pure_functions_closed_form():
    logits = torch.tensor([[0.0, math.log(3.0)]])           # softmax = [1/4, 3/4]
    assert scorers.msp(logits).item() == pytest.approx(0.75)
    assert scorers.maxlogit(logits).item() == pytest.approx(math.log(3.0))
    assert scorers.energy(logits).item() == pytest.approx(math.log(4.0))
    assert scorers.energy(logits, T=2.0).item() == pytest.approx(2 * math.log(1 + math.sqrt(3.0)), rel=1e-6)
    assert scorers.entropy(logits).item() == pytest.approx(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    # uniform prediction: entropy score -log K (the lowest), msp 1/K
    assert scorers.entropy(torch.zeros(1, 5)).item() == pytest.approx(-math.log(5))
    assert scorers.msp(torch.zeros(1, 5)).item() == pytest.approx(0.2)


def test_energy_shift_by_constant():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 4, generator=g)
    for c in (-3.0, 2.5):
        assert torch.allclose(scorers.energy(f + c), scorers.energy(f) + c, atol=1e-5)
        assert torch.allclose(scorers.msp(f + c), scorers.msp(f), atol=1e-6)          # softmax is shift invariant
        assert torch.allclose(scorers.entropy(f + c), scorers.entropy(f), atol=1e-5)


def test_ash_shaping_by_hand():
    x = torch.tensor([[1.0, 4.0, 2.0, 3.0]])
    # percentile 50: k = 4 - round(2) = 2 kept (the values 4 and 3); s1 = 10, s2 = 7
    assert torch.equal(scorers.ash_p(x, 50), torch.tensor([[0.0, 4.0, 0.0, 3.0]]))
    assert torch.equal(scorers.ash_b(x, 50), torch.tensor([[0.0, 5.0, 0.0, 5.0]]))      # s1 / k = 10 / 2
    assert torch.allclose(scorers.ash_s(x, 50), torch.tensor([[0.0, 4.0, 0.0, 3.0]]) * math.exp(10 / 7))
    assert torch.equal(scorers.ash_p(x, 0), x)
    assert torch.equal(scorers.ash_p(x, 100), torch.tensor([[0.0, 4.0, 0.0, 0.0]]))     # at least one kept
    assert torch.equal(scorers.ash_b(x.clone(), 50).sum(1), x.sum(1))                     # sum-preserving
    # rows independently, input untouched
    x2 = torch.tensor([[1.0, 4.0, 2.0, 3.0], [9.0, 0.0, 0.0, 1.0]])
    before = x2.clone()
    assert torch.equal(scorers.ash_p(x2, 75), torch.tensor([[0.0, 4.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(x2, before)


# ----------------------------------------------------------------------------------------------
# scorers that reduce to the energy score
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def random_net():
    g = torch.Generator().manual_seed(1)
    model = IdentityNet(torch.randn(3, 6, generator=g), torch.randn(3, generator=g))
    train = torch.rand(40, 6, generator=g) * 3
    test = torch.rand(10, 6, generator=g) * 3
    return model, train, test


def test_react_without_clipping_is_energy(random_net):
    model, train, test = random_net
    react = fit(scorers.build_scorer("react", threshold=float("inf")), model, train)
    assert torch.allclose(score(react, model, test), scorers.energy(model.head(test)).detach(), atol=1e-6)


def test_react_clips_at_the_train_percentile(random_net):
    model, train, test = random_net
    react = fit(scorers.build_scorer("react", percentile=70), model, train)
    assert react.threshold == pytest.approx(np.percentile(train.numpy().ravel(), 70), rel=1e-6)
    expected = scorers.energy(model.head(test.clamp(max=react.threshold))).detach()
    assert torch.allclose(score(react, model, test), expected, atol=1e-6)
    # by hand: W = I, no bias, c = 2: h = [1, 5] -> logits [1, 2] -> log(e + e^2)
    eye = IdentityNet(torch.eye(2))
    r = scorers.build_scorer("react", threshold=2.0)
    assert score(r, eye, [[1.0, 5.0]]).item() == pytest.approx(math.log(math.e + math.e ** 2), rel=1e-6)


def test_ash_p_at_percentile_zero_is_energy(random_net):
    model, _, test = random_net
    ash = scorers.build_scorer("ash_p", percentile=0)
    assert torch.allclose(score(ash, model, test), scorers.energy(model.head(test)).detach(), atol=1e-6)
    # ASH-S at 0 keeps everything but scales by exp(s1/s2) = e
    ash_s = scorers.build_scorer("ash_s", percentile=0)
    assert torch.allclose(score(ash_s, model, test), scorers.energy(model.head(math.e * test)).detach(), atol=1e-5)


def test_dice_keeping_every_weight_is_energy(random_net):
    model, train, test = random_net
    dice = fit(scorers.build_scorer("dice", percentile=0), model, train)
    assert bool(dice.mask.all())
    assert torch.allclose(score(dice, model, test), scorers.energy(model.head(test)).detach(), atol=1e-5)


def test_dice_mask_by_hand():
    # W = [[1, 2], [3, 4]], mean ID activation [1, 1] -> contributions = W; the 50th percentile of
    # {1, 2, 3, 4} is 2.5, so the weights 3 and 4 are kept: masked W = [[0, 0], [3, 4]]; bias kept.
    model = IdentityNet([[1.0, 2.0], [3.0, 4.0]], bias=[0.5, -0.5])
    dice = fit(scorers.build_scorer("dice", percentile=50), model, [[0.0, 2.0], [2.0, 0.0]])
    assert dice.mask.tolist() == [[False, False], [True, True]]
    h = [[1.0, 2.0]]                                     # masked logits: [0 + 0.5, 3 + 8 - 0.5]
    assert score(dice, model, h).item() == pytest.approx(math.log(math.exp(0.5) + math.exp(10.5)), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# KNN, Mahalanobis, ViM
# ----------------------------------------------------------------------------------------------

def test_knn_by_hand():
    model = IdentityNet(torch.eye(2))
    train = [[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]]         # normalized: e1, e2, -e1
    k1 = fit(scorers.build_scorer("knn", k=1), model, train)
    k2 = fit(scorers.build_scorer("knn", k=2), model, train)
    k3 = fit(scorers.build_scorer("knn", k=3), model, train)
    q = [[5.0, 0.0], [0.0, -1.0]]
    assert score(k1, model, q).tolist() == pytest.approx([0.0, -math.sqrt(2)], abs=1e-6)
    assert score(k2, model, q).tolist() == pytest.approx([-math.sqrt(2), -math.sqrt(2)], abs=1e-6)
    assert score(k3, model, q).tolist() == pytest.approx([-2.0, -2.0], abs=1e-6)


def test_knn_scale_invariance_and_chunking_match_brute_force():
    g = torch.Generator().manual_seed(2)
    model = IdentityNet(torch.randn(3, 5, generator=g))
    train, test = torch.rand(300, 5, generator=g), torch.rand(70, 5, generator=g)
    knn = fit(scorers.build_scorer("knn", k=7), model, train)
    knn.query_chunk, knn.bank_chunk = 16, 50           # force several chunks of both
    s = score(knn, model, test)
    zt, zq = F.normalize(train, dim=1), F.normalize(test, dim=1)
    brute = -torch.cdist(zq, zt).sort(dim=1).values[:, 6]
    assert torch.allclose(s, brute, atol=1e-5)
    scaled = fit(scorers.build_scorer("knn", k=7), model, 13.0 * train)
    assert torch.allclose(score(scaled, model, 0.01 * test), s, atol=1e-5)


def test_knn_k_larger_than_train_set():
    model = IdentityNet(torch.eye(2))
    with pytest.raises(ValueError, match="k.*only 3 ID-train"):
        fit(scorers.build_scorer("knn", k=4), model, torch.rand(3, 2))


def test_mahalanobis_by_hand():
    # class 0: the corners of the square [0, 2]^2 (mean (1, 1)); class 1: the same square shifted to (10, 10)
    # (mean (11, 11)). Centered points are (+-1, +-1) in both: tied covariance = I.
    # h = (1, 3): squared distances 4 (class 0) and 10^2 + 8^2 = 164 (class 1) -> score -4.
    sq = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    pen = torch.cat([sq, sq + 10.0])
    labels = torch.tensor([0] * 4 + [1] * 4)
    model = IdentityNet(torch.eye(2))
    maha = scorers.build_scorer("mahalanobis").fit_features(pen, model.head(pen).detach(), labels, model)
    assert torch.allclose(maha.precision, torch.eye(2, dtype=torch.float64))
    assert score(maha, model, [[1.0, 3.0], [11.0, 11.0]]).tolist() == pytest.approx([-4.0, 0.0], abs=1e-9)


def test_mahalanobis_two_gaussians_matches_numpy_and_ranks_far_point_lowest():
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    a = rng.multivariate_normal([0, 0], cov, 200)
    b = rng.multivariate_normal([8, 8], cov, 200)
    pen = torch.tensor(np.vstack([a, b]), dtype=torch.float32)
    labels = torch.tensor([0] * 200 + [1] * 200)
    model = IdentityNet(torch.eye(2))
    maha = scorers.build_scorer("mahalanobis").fit_features(pen, model.head(pen).detach(), labels, model)
    q = np.array([[0.1, -0.2], [8.0, 7.5], [4.0, 4.0], [30.0, -30.0]])
    # independent computation: class means, pooled within-class covariance (divide by N), inverse
    x = pen.double().numpy()
    mus = [x[:200].mean(0), x[200:].mean(0)]
    centered = np.vstack([x[:200] - mus[0], x[200:] - mus[1]])
    prec = np.linalg.inv(centered.T @ centered / 400)
    expected = [max(-(v - m) @ prec @ (v - m) for m in mus) for v in q]
    s = score(maha, model, q)
    assert s.tolist() == pytest.approx(expected, rel=1e-4)
    assert int(s.argmin()) == 3 and s[0] > s[2] and s[1] > s[2]


def test_vim_alpha_and_residual_by_hand():
    # W = [[1, 0, 0], [0, 1, 0]], b = [1, -1] -> origin o = -pinv(W) b = (-1, 1, 0).
    # Train features o + x with x = (+-3, 0, 0), (0, +-2, 0), (0, 0, +-1): covariance of h - o is
    # diag(18, 8, 2) / 6; with dim = 2 the residual space is e3. Residual norms of the train points:
    # 0, 0, 0, 0, 1, 1 -> mean 1/3. Train logits W h + b = W x: max logits 3, 0, 2, 0, 0, 0 -> mean 5/6.
    # alpha = (5/6) / (1/3) = 2.5. Query h = o + (1, 1, 2): residual 2, logits (1, 1), energy 1 + ln 2,
    # score 1 + ln 2 - 2.5 * 2.
    model = IdentityNet([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], bias=[1.0, -1.0])
    o = torch.tensor([-1.0, 1.0, 0.0])
    x = torch.tensor([[3.0, 0, 0], [-3.0, 0, 0], [0, 2.0, 0], [0, -2.0, 0], [0, 0, 1.0], [0, 0, -1.0]])
    vim = fit(scorers.build_scorer("vim", dim=2), model, o + x)
    assert vim.origin.tolist() == pytest.approx(o.tolist(), abs=1e-6)
    assert vim.alpha == pytest.approx(2.5, rel=1e-6)
    q = o + torch.tensor([[1.0, 1.0, 2.0]])
    assert vim.residual_norm(q).item() == pytest.approx(2.0, rel=1e-6)
    assert score(vim, model, q).item() == pytest.approx(1 + math.log(2) - 5.0, rel=1e-5)


def test_vim_dimension_rule_and_errors():
    assert [scorers.ViM.default_dim(d) for d in (4096, 2048, 1024, 768, 512, 342, 128)] == [1000, 1000, 512, 512, 256,
                                                                                            171, 64]
    model = IdentityNet(torch.eye(3))
    with pytest.raises(ValueError, match="dim.*feature dimension 3"):
        fit(scorers.build_scorer("vim", dim=3), model, torch.rand(10, 3))


# ----------------------------------------------------------------------------------------------
# GradNorm and ODIN against autograd
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1.0, 2.0])
def test_gradnorm_closed_form_equals_autograd(T):
    g = torch.Generator().manual_seed(3)
    model = IdentityNet(torch.randn(4, 5, generator=g), torch.randn(4, generator=g))
    h = torch.rand(6, 5, generator=g) * 2
    fast = score(scorers.build_scorer("gradnorm", T=T), model, h)
    slow, code = [], []
    for hi in h:                                           # per sample, as the original (batch size 1)
        logits = model.fc(hi[None]) / T
        kl = (0.25 * (math.log(0.25) - torch.log_softmax(logits, 1))).sum()   # KL(uniform || softmax)
        (gw,) = torch.autograd.grad(kl, model.fc.weight, retain_graph=True)
        slow.append(gw.abs().sum().item())
        ones = -(torch.log_softmax(logits, 1)).sum()      # the gradnorm_ood code: targets = ones
        (gw,) = torch.autograd.grad(ones, model.fc.weight)
        code.append(gw.abs().sum().item())
    assert fast.tolist() == pytest.approx(slow, rel=1e-5)
    assert (4 * fast).tolist() == pytest.approx(code, rel=1e-5)  # the code's value is K times ours


def test_odin_with_zero_eps_is_temperature_msp():
    g = torch.Generator().manual_seed(4)
    model = IdentityNet(torch.randn(3, 4, generator=g), torch.randn(3, generator=g))
    x = torch.rand(5, 4, generator=g)
    odin = scorers.build_scorer("odin", T=10.0, eps=0.0)
    expected = torch.softmax(model.head(x) / 10.0, 1).amax(1).detach()
    assert torch.allclose(odin.score(model, img(x)), expected, atol=1e-6)
    assert torch.allclose(odin.score_features(x, model.head(x).detach()), expected, atol=1e-6)
    with pytest.raises(RuntimeError, match="needs the network"):
        scorers.build_scorer("odin").score_features(x, model.head(x).detach())


def test_odin_perturbation_matches_the_normalized_space_step_of_the_original():
    # the ODIN code: gradient sign w.r.t. the normalized input, divided by std, step on the normalized
    # input; ours: the same step on the [0, 1] input. Linear model, so both are easy to write out.
    g = torch.Generator().manual_seed(5)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
    model = IdentityNet(torch.randn(4, 3, generator=g), torch.randn(4, generator=g), mean=mean, std=std)
    x = img(torch.rand(6, 3, generator=g))
    T, eps = 1000.0, 0.0014
    xn = model.normalize(x).detach().requires_grad_(True)
    out = model.head(model.pool(model.body(xn)))
    loss = F.cross_entropy(out / T, out.argmax(1))
    (gn,) = torch.autograd.grad(loss, xn)
    sign = (torch.ge(gn, 0).float() - 0.5) * 2 / torch.tensor(std).view(1, -1, 1, 1)
    xn_t = xn.detach() - eps * sign
    expected = torch.softmax(model.head(model.pool(model.body(xn_t))) / T, 1).amax(1).detach()
    got = scorers.build_scorer("odin", T=T, eps=eps).score(model, x)
    assert torch.allclose(got, expected, atol=1e-7, rtol=1e-5)
    # the step raises the tempered confidence of the predicted class (it lowers its cross-entropy)
    assert bool((got > scorers.build_scorer("odin", T=T, eps=0.0).score(model, x)).all())


# ----------------------------------------------------------------------------------------------
# higher = more ID, on a tiny trained model
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blobs_model():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[3.0, 3.0], [-3.0, -3.0]])

    def sample(n):
        y = torch.arange(n) % 2
        return centers[y] + 0.7 * torch.randn(n, 2, generator=g), y

    x_train, y_train = sample(400)
    model = MLPNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(img(x_train)), y_train).backward()
        opt.step()
    model.eval()
    x_id, _ = sample(100)
    # OOD: far from both blobs (about 4 standard deviations away from each), between the classes
    x_far = torch.tensor([[3.0, -3.0], [-3.0, 3.0]])[torch.arange(100) % 2] + 0.3 * torch.randn(100, 2, generator=g)
    loader = [(img(x_train[i:i + 100]), y_train[i:i + 100]) for i in range(0, 400, 100)]
    return model, loader, img(x_id), img(x_far)


@pytest.mark.parametrize("name", list(scorers.SCORERS))
def test_higher_means_id(blobs_model, name):
    model, loader, x_id, x_far = blobs_model
    scorer = scorers.build_scorer(name).fit(model, loader)
    s_id, s_far = scorer.score(model, x_id), scorer.score(model, x_far)
    assert s_id.shape == (100,) and s_far.shape == (100,)
    assert bool(torch.isfinite(s_id).all() and torch.isfinite(s_far).all())
    assert auroc(s_id, s_far) > 80.0, f"{name}: ID points should score higher than far-away points"


# ----------------------------------------------------------------------------------------------
# contract: extract, fit / score conveniences, registry
# ----------------------------------------------------------------------------------------------

def test_extract_and_conveniences_match_cached_path(blobs_model):
    model, loader, x_id, _ = blobs_model
    model.train()
    pen, logits, labels = scorers.extract(model, loader)
    assert model.training                                  # the flag is restored
    model.eval()
    assert pen.shape == (400, 16) and logits.shape == (400, 2) and labels.shape == (400,)
    assert torch.allclose(logits, model(torch.cat([x for x, _ in loader])).detach(), atol=1e-5)
    assert not pen.requires_grad
    a = scorers.build_scorer("vim").fit(model, loader)
    b = scorers.build_scorer("vim").fit_features(pen, logits, labels, model)
    p_id = model.pool(model.features(x_id)).detach()
    assert torch.allclose(a.score(model, x_id), b.score_features(p_id, model.head(p_id).detach(), model), atol=1e-5)
    with pytest.raises(ValueError, match="no batches"):
        scorers.extract(model, [])


def test_unfitted_scorer_raises():
    model = IdentityNet(torch.eye(2))
    with pytest.raises(RuntimeError, match="not fitted"):
        score(scorers.build_scorer("mahalanobis"), model, [[0.0, 1.0]])


def test_registry_and_defaults():
    # every scorer has its defaults; these twenty stay registered (a new scorer joins without editing this test)
    assert set(scorers.SCORERS) == set(scorers.DEFAULTS) >= {
        "msp", "maxlogit", "energy", "entropy", "odin", "mahalanobis", "knn", "react", "ash_p", "ash_b", "ash_s",
        "dice", "gradnorm", "vim", "gen", "scale", "fdbd", "rmd", "nnguide", "neco"}
    for name, cls in scorers.SCORERS.items():
        sc = scorers.build_scorer(name)
        assert isinstance(sc, cls) and sc.name == name
        assert sc.params == scorers.DEFAULTS[name]
        assert sc.needs_network == (name == "odin")
    assert scorers.DEFAULTS["odin"] == {"T": 1000.0, "eps": 0.0014}
    assert scorers.DEFAULTS["knn"]["k"] == 50 and scorers.DEFAULTS["react"]["percentile"] == 90


def test_unknown_names_params_and_bad_values_raise():
    with pytest.raises(ValueError, match="unknown scorer 'foo'; allowed: msp, maxlogit"):
        scorers.build_scorer("foo")
    with pytest.raises(ValueError, match="unknown parameter 'temperature' for scorer 'energy'; allowed: T"):
        scorers.build_scorer("energy", temperature=2.0)
    with pytest.raises(ValueError, match="allowed: \\(none\\)"):
        scorers.build_scorer("msp", T=1.0)
    for name, params in [("energy", {"T": 0}), ("knn", {"k": 0}), ("knn", {"k": 2.5}), ("react", {"percentile": 101}),
                         ("ash_b", {"percentile": 100}), ("dice", {"percentile": -1}), ("odin", {"eps": -0.1}),
                         ("vim", {"dim": -1}), ("gradnorm", {"T": float("nan")}), ("knn", {"k": True})]:
        with pytest.raises(ValueError, match=f"invalid value .* for parameter '{next(iter(params))}'"):
            scorers.build_scorer(name, **params)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_scorer_runs_on_cuda_and_matches_cpu(blobs_model):
    model, loader, x_id, x_far = blobs_model
    x = torch.cat([x_id, x_far])
    cuda_model = MLPNet().cuda()
    cuda_model.load_state_dict(model.state_dict())
    cuda_model.eval()
    cuda_loader = [(a.cuda(), b.cuda()) for a, b in loader]
    for name in scorers.SCORERS:
        cpu = scorers.build_scorer(name).fit(model, loader).score(model, x)
        gpu = scorers.build_scorer(name).fit(cuda_model, cuda_loader).score(cuda_model, x.cuda())
        assert gpu.device.type == "cuda", name
        assert torch.allclose(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3), name
