"""k-means and the outlier samplers on constructed features and energies."""
import pytest
import torch
import torch.nn.functional as F

from ood.models import SmallNet
from ood.sampling import SAMPLERS, EnergyClusterSampler, build_sampler, cluster_picks, kmeans


def _blobs(n_per=10, seed=0, dims=3):
    """Three well-separated clusters around the unit axes (after L2 normalization, clusters stay apart)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.eye(dims)[:3] * 5
    x = torch.cat([c + 0.1 * torch.randn(n_per, dims, generator=g) for c in centers])
    truth = torch.arange(3).repeat_interleave(n_per)
    return x, truth


def _same_partition(a, b):
    return all(len(set(b[a == c].tolist())) == 1 for c in a.unique()) and len(a.unique()) == len(b.unique())


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_recovers_separated_clusters(seed):
    x, truth = _blobs(seed=seed)
    labels, centers = kmeans(x, 3, generator=torch.Generator().manual_seed(seed))
    assert _same_partition(labels, truth)
    for c in range(3):  # centers are the cluster means
        torch.testing.assert_close(centers[c], x[labels == c].mean(0))


def test_kmeans_deterministic_and_edge_cases():
    x, _ = _blobs(seed=3)
    a = kmeans(x, 4, generator=torch.Generator().manual_seed(7))
    b = kmeans(x, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    labels, _ = kmeans(x, x.shape[0], generator=torch.Generator().manual_seed(0))  # k = N: every point alone
    assert len(labels.unique()) == x.shape[0]
    labels, _ = kmeans(torch.ones(5, 2), 2, generator=torch.Generator().manual_seed(0))  # identical points
    assert labels.shape == (5,)
    for k in (0, 31):
        with pytest.raises(ValueError, match="k="):
            kmeans(x, k)


def test_cluster_picks_lowest_and_highest():
    e = torch.tensor([5.0, 1.0, 3.0, 2.0, 9.0, 0.0])
    labels = torch.tensor([0, 0, 1, 1, 1, 3])  # cluster 2 empty
    lo, hi, ok = cluster_picks(e, labels, 4)
    assert ok.tolist() == [True, True, False, True]
    assert lo[ok].tolist() == [1, 3, 5] and hi[ok].tolist() == [0, 4, 5]


def _constructed(n_per=10):
    x, truth = _blobs(n_per)
    feats = F.normalize(x, dim=1)
    e = torch.randperm(3 * n_per, generator=torch.Generator().manual_seed(1)).float() - 40  # distinct energies
    lo = [int(torch.nonzero(truth == c).flatten()[e[truth == c].argmin()]) for c in range(3)]
    hi = [int(torch.nonzero(truth == c).flatten()[e[truth == c].argmax()]) for c in range(3)]
    return e, feats, truth, lo, hi


def test_energy_cluster_two_way_picks_exact():
    e, feats, _, lo, hi = _constructed()
    s = build_sampler("energy_cluster")  # k = n_out // 2 = 3
    idx = s.pick(e, feats, 6, torch.Generator().manual_seed(0))
    assert sorted(idx.tolist()) == sorted(lo + hi)


def test_dos_one_way_picks_lowest_and_skips_most_id_like():
    e, feats, truth, lo, _ = _constructed()
    s = build_sampler("dos", skip_fraction=0.0)  # k = n_out = 3
    assert sorted(s.pick(e, feats, 3, torch.Generator().manual_seed(0)).tolist()) == sorted(lo)
    # dropping the single most ID-like candidate of the pool: its cluster gives its second-lowest instead
    s = build_sampler("dos", skip_fraction=1.5 / 30)
    g_low = int(e.argmin())
    c = int(truth[g_low])
    members = torch.nonzero(truth == c).flatten()
    second = int(members[e[members].argsort()[1]])
    expected = sorted([i for i in lo if i != g_low] + [second])
    assert sorted(s.pick(e, feats, 3, torch.Generator().manual_seed(0)).tolist()) == expected


def test_fill_to_size_and_priority():
    e, feats, _, lo, hi = _constructed()
    s = build_sampler("energy_cluster", num_clusters=3)
    idx = s.pick(e, feats, 10, torch.Generator().manual_seed(0)).tolist()
    assert len(idx) == 10 and len(set(idx)) == 10 and set(lo + hi) <= set(idx)
    # more picks than n_out: the lowest-energy picks win
    idx = s.pick(e, feats, 3, torch.Generator().manual_seed(0)).tolist()
    assert sorted(idx) == sorted(lo)
    # the fill-up is random: different generators give different fills, the same one the same
    a = s.pick(e, feats, 12, torch.Generator().manual_seed(1))
    b = s.pick(e, feats, 12, torch.Generator().manual_seed(1))
    fills = {tuple(sorted(s.pick(e, feats, 12, torch.Generator().manual_seed(k)).tolist())) for k in range(5)}
    assert torch.equal(a, b) and len(fills) > 1


def test_select_uses_eval_mode_and_restores_it():
    torch.manual_seed(0)
    model = SmallNet(3, width=8).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cand = torch.rand(24, 3, 32, 32)
    for name in SAMPLERS:
        s = build_sampler(name)
        idx = s.select(model, cand, 8, torch.Generator().manual_seed(0))
        assert idx.dtype == torch.long and idx.shape == (8,) and len(set(idx.tolist())) == 8
        assert int(idx.max()) < 24 and model.training
    for k, v in model.state_dict().items():  # eval mode: BN running statistics untouched
        assert torch.equal(v, before[k]), k
    a = build_sampler("energy_cluster").select(model, cand, 8, torch.Generator().manual_seed(3))
    b = build_sampler("energy_cluster").select(model, cand, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="pool_factor"):
        build_sampler("random").select(model, cand, 25, None)


@pytest.mark.parametrize("name,params,match", [
    ("greedy", {}, "allowed: random, energy_cluster, dos"),
    ("energy_cluster", {"k": 3}, "allowed: pool_factor"),
    ("energy_cluster", {"pool_factor": 0}, "pool_factor"),
    ("energy_cluster", {"two_way": "yes"}, "two_way"),
    ("dos", {"skip_fraction": 1.0}, "skip_fraction"),
    ("random", {"pool_factor": 1.5}, "pool_factor"),
])
def test_bad_sampler_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        build_sampler(name, **params)


def test_defaults_follow_greg_plus_protocol():
    s = build_sampler("energy_cluster")
    assert isinstance(s, EnergyClusterSampler) and s.pool_factor == 6 and s.two_way and s.eval_mode
    assert build_sampler("dos").two_way is False
