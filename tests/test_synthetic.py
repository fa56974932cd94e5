"""The embedded synthetic benchmark (ood/synthetic.py): determinism, prefix stability, the contract of each set,
that backgrounds hold no object, that the sets differ, that the ID task is learnable, and argument errors."""
from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

from ood import synthetic as syn


def test_constants():
    assert len(syn.CLASSES) == 10 and len(set(syn.CLASSES)) == 10
    assert syn.SETS == ("train", "test", "backgrounds", "novel-objects", "textures", "noise", "aux")
    assert syn.OOD_SETS == ("backgrounds", "novel-objects", "textures", "noise")
    assert syn.CHUNK % 10 == 0  # every chunk holds each class equally often


@pytest.mark.parametrize("name", syn.SETS)
def test_shapes_dtypes_determinism(name):
    x, y = syn.generate(name, 37, seed=5)
    assert x.shape == (37, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (37,) and y.dtype == np.int64
    assert x.max() > 200 and x.min() < 55  # uses the value range, not a constant image
    x2, y2 = syn.generate(name, 37, seed=5)
    assert x.tobytes() == x2.tobytes() and np.array_equal(y, y2)
    x3, _ = syn.generate(name, 37, seed=6)
    assert (x3 != x).any(axis=(1, 2, 3)).all()  # every image changes with the seed
    assert len({im.tobytes() for im in x}) == len(x)  # no duplicates within a set


@pytest.mark.parametrize("name", ["train", "noise", "aux"])
def test_prefix_stability_across_chunks(name):
    n_big = syn.CHUNK + 30
    xb, yb = syn.generate(name, n_big, seed=1)
    for n in (1, 50, syn.CHUNK, syn.CHUNK + 7):
        x, y = syn.generate(name, n, seed=1)
        assert np.array_equal(x, xb[:n]) and np.array_equal(y, yb[:n])


def test_streams_are_independent_per_set():
    """Same seed, different set names -> different streams (derived from crc32 of the name, not the salted hash())."""
    xtr, _ = syn.generate("train", 20, seed=0)
    xte, _ = syn.generate("test", 20, seed=0)
    assert not any(np.array_equal(a, b) for a in xtr for b in xte)
    assert syn._rng("train", 0, 0).integers(1 << 62) != syn._rng("test", 0, 0).integers(1 << 62)
    assert syn._rng("train", 0, 0).integers(1 << 62) != syn._rng("train", 0, 1).integers(1 << 62)


def test_generate_is_the_rounded_hook():
    part = syn._render_chunk("test", 2, 0)
    x, y = syn.generate("test", syn.CHUNK, seed=2)
    assert np.array_equal(x, np.clip(np.rint(part["image"] * 255), 0, 255).astype(np.uint8))
    assert np.array_equal(y, part["label"])


@pytest.mark.parametrize("n", [10, 95, 1000])
def test_id_labels_balanced(n):
    _, y = syn.generate("train", n, seed=0)
    counts = np.bincount(y, minlength=10)
    assert len(counts) == 10 and counts.sum() == n
    assert counts.min() >= n // 10 and counts.max() <= n // 10 + 1


@pytest.mark.parametrize("name", syn.OOD_SETS + ("aux",))
def test_ood_labels_are_minus_one(name):
    _, y = syn.generate(name, 25, seed=0)
    assert (y == -1).all()


def test_backgrounds_hold_no_object():
    bg = syn._render_chunk("backgrounds", 0, 0)
    assert bg["alpha"] is None
    # the image is its background plus the sensor noise only (sigma <= 0.025, so |diff| stays far below 0.2)
    resid = bg["image"] - np.clip(bg["background"], 0, 1)
    assert np.abs(resid).max() < 0.2 and np.abs(resid.mean()) < 0.01
    # ... whereas every ID image has an object covering a sizeable part of the image, of a visibly different colour
    idp = syn._render_chunk("test", 0, 0)
    cover = idp["alpha"].sum(axis=(1, 2)) / 32 ** 2
    assert cover.min() > 0.08 and cover.max() < 0.5 and 0.18 < cover.mean() < 0.35
    inside = idp["alpha"] > 0.99
    diff = np.abs(idp["image"] - idp["background"]).sum(-1)  # L1 colour difference, 0..3
    per_image = np.array([diff[i][inside[i]].mean() for i in range(len(diff))])
    assert (per_image > 0.15).mean() > 0.95


def test_backgrounds_match_id_backgrounds():
    """The OOD backgrounds come from the same generators as the ID backgrounds: the per-image brightness and edge
    statistics of the two samples are not distinguishable (two-sample KS test), while those of textures are."""
    from scipy.stats import ks_2samp

    def stats(name):
        a = np.concatenate([syn._render_chunk(name, 0, k)["background" if name != "textures" else "image"]
                            for k in range(5)])
        return a.mean(axis=(1, 2, 3)), np.abs(np.diff(a, axis=2)).mean(axis=(1, 2, 3))

    bg, idbg, tex = stats("backgrounds"), stats("train"), stats("textures")
    for a, b, _c in zip(bg, idbg, tex):
        assert ks_2samp(a, b).pvalue > 1e-3
    assert ks_2samp(bg[1], tex[1]).pvalue < 1e-6


def _edge_energy(x):
    x = x.astype(np.float64) / 255
    return np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))


def test_sets_differ():
    data = {name: syn.generate(name, 200, seed=0)[0] for name in syn.SETS}
    seen = {}
    for name, x in data.items():
        for im in x:
            assert seen.setdefault(im.tobytes(), name) == name, f"an image of {name} is also in {seen[im.tobytes()]}"
    e = {name: np.median(_edge_energy(x)) for name, x in data.items()}
    assert e["noise"] > 2 * e["textures"] > 2 * e["backgrounds"]  # graded: pixel noise >> fine textures >> smooth
    assert e["train"] > e["backgrounds"]  # an object adds edges to its background
    # mean colours of each set are near grey; the sets are told apart by structure, not by a colour cast
    for name, x in data.items():
        assert np.abs(x.mean(axis=(0, 1, 2)) / 255 - 0.5).max() < 0.12, name


def test_aux_generators_disjoint_from_test_sets():
    test_gens = set(syn._BACKGROUNDS) | set(syn._OBJECTS) | set(syn._NOVEL) | set(syn._TEXTURES)
    assert set(syn._AUX).isdisjoint(test_gens)
    assert len(syn._AUX) >= 5


def test_noise_set_halves():
    x, _ = syn.generate("noise", 400, seed=0)
    v = x.astype(np.float64) / 255
    uni, gau = v[0::2], v[1::2]
    hist = np.histogram(uni, bins=4, range=(0, 1))[0] / uni.size
    assert np.allclose(hist, 0.25, atol=0.02)  # U[0, 1]
    mid = ((gau > 0.25) & (gau < 0.75)).mean()
    assert mid > 0.6  # N(mu in [0.3, 0.7], sigma <= 0.35): most mass in the middle half


def test_uses_only_exact_arithmetic():
    """The documented guarantee of identical bytes everywhere, checked on the module's syntax tree: numpy is used
    without transcendental ufuncs or BLAS, math only for sqrt and pi, no matrix product operator, no torch/PIL, no
    Python hash() (salted per process), no legacy global random state."""
    tree = ast.parse(inspect.getsource(syn))
    banned_np = {"sin", "cos", "tan", "arctan", "arctan2", "exp", "expm1", "log", "log1p", "log2", "power",
                 "float_power", "dot", "matmul", "einsum", "tensordot", "inner", "linalg", "fft", "sum", "mean"}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "np":
                assert node.attr not in banned_np, f"np.{node.attr}"
            if node.value.id == "math":
                assert node.attr in {"sqrt", "pi"}, f"math.{node.attr}"
        elif isinstance(node, ast.Attribute) and node.attr in {"seed", "rand", "randn", "default_rng"}:
            raise AssertionError(f"global or default random state: .{node.attr}")
        elif isinstance(node, ast.BinOp):
            assert not isinstance(node.op, ast.MatMult), "@"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "hash", "hash()"
    assert imported <= {"__future__", "math", "zlib", "typing", "numpy"}, imported


def test_id_task_learnable():
    """A linear classifier on translation-invariant features (|FFT| of the gradient magnitude) beats chance (10%)
    by a clear margin; a small CNN reaches ~98% in a few epochs (measured, not tested here: too slow)."""
    from sklearn.linear_model import LogisticRegression

    def feats(x):
        x = x.astype(np.float64) / 255
        gx, gy = np.diff(x, axis=2)[:, :-1], np.diff(x, axis=1)[:, :, :-1]
        g = np.sqrt((gx ** 2 + gy ** 2).sum(-1))
        return np.log1p(np.abs(np.fft.rfft2(g))[:, :12, :7].reshape(len(x), -1))

    xtr, ytr = syn.generate("train", 1200, seed=0)
    xte, yte = syn.generate("test", 600, seed=0)
    ftr, fte = feats(xtr), feats(xte)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-8
    clf = LogisticRegression(max_iter=200, C=0.5).fit((ftr - mu) / sd, ytr)
    assert clf.score((fte - mu) / sd, yte) > 0.35


@pytest.mark.parametrize("args, match", [
    (("val", 10), r"unknown synthetic set .val.; allowed: train, test, backgrounds, novel-objects, "
                  r"textures, noise, aux"),
    (("train", 0), r"n must be a positive int, got 0"),
    (("train", -3), r"n must be a positive int, got -3"),
    (("train", 2.5), r"n must be a positive int, got 2.5"),
    (("train", True), r"n must be a positive int, got True"),
    (("train", "10"), r"n must be a positive int, got '10'"),
    (("train", 10, -1), r"seed must be a non-negative int, got -1"),
    (("train", 10, 1.5), r"seed must be a non-negative int, got 1.5"),
])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        syn.generate(*args)


def test_describe():
    for name in syn.SETS:
        text = syn.describe(name)
        assert isinstance(text, str) and len(text) > 40
    with pytest.raises(ValueError, match="allowed: train, test"):
        syn.describe("cifar10")
