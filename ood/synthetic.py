"""The embedded synthetic benchmark: 32x32 RGB images generated from a seed, no download.

It stands in for CIFAR-10 and the classic OOD test sets on a CPU, in seconds, and it is built to exercise the
argument of BFM (Ye et al., arXiv 2510.12259): a classifier trained with cross-entropy only learns that
*something* in the image predicts the class, and stays confident on images that hold nothing but the kind of
background it has seen behind its objects. So the ID images are objects drawn on procedural backgrounds, and one
OOD set is those backgrounds alone.

Sets (``SETS``; ``generate(set_name, n, seed)`` returns ``(uint8 images (n, 32, 32, 3), int64 labels (n,))``):

* ``train``, ``test`` (ID, labels 0..9 = ``CLASSES``): one object of class ``i % 10`` (image index ``i``,
  so every class has ``n // 10`` or ``n // 10 + 1`` images) at a random position (fully or mostly inside),
  rotation, size (about 12-42% of the image area; thin shapes less, as their size is capped so that they fit)
  and colour (picked, among random candidates, as the farthest from the background's colours, so the object
  always stands out), with a mild linear shading, on one background of the family below.
* Background family (ID, ``backgrounds``, ``novel-objects``): linear two-colour gradients, smooth value noise
  (a coarse random grid, interpolated), soft stripes (period 7-16 px), soft gaussian-like blobs, soft rotated
  checkers (cell 5-12 px); two or three colours each.
* ``backgrounds`` (OOD, hard for a plain CE classifier, the BFM case): the same background generators, no object.
* ``novel-objects`` (OOD, near): shapes never seen in ID (letter-like strokes, spirals, irregular polygons,
  clusters of small dots, zig-zags) drawn the same way on the same backgrounds.
* ``textures`` (OOD): texture families never used for ID backgrounds or objects: fine plaid (period 2-4.5 px),
  wood-grain rings, cellular (Voronoi) cells with dark borders, marble veins (a periodic wave of a coordinate plus
  turbulence), halftone dot lattices.
* ``noise`` (OOD, easy): even indices uniform pixel noise U[0, 1], odd indices gaussian pixel noise N(mu, sigma)
  clipped; a third of each at a coarse scale (2x2 or 4x4 blocks).
* ``aux`` (auxiliary outliers for outlier exposure / GReg, standing in for "300K random images"): generators
  disjoint from ID and from every test set: line clutter, rectangle mosaics, radial gradients through a random
  4-colour map, thick random-walk scribbles, posterized camouflage, colour wheels of sectors. Disjoint, so that an
  OOD score measured on a test set is not a score on the training outliers.

Every image except ``noise`` gets the same mild gaussian sensor noise (sigma uniform in [0, 0.025]), so that
noise-free smoothness does not tell sets apart. Default sizes (``ood.data.SYNTHETIC_SIZES``): train 10,000,
test 2,000, each OOD set 2,000, aux 10,000 (how long generating them takes: benchmarks/README.md).

Reproducibility [our design]: every set/split has its own random stream, derived from ``(seed,
zlib.crc32(set_name), chunk)``; images are made in chunks of ``CHUNK`` images, each with its own stream, so
``generate(s, 50)`` is the first 50 images of ``generate(s, 100)`` and asking for more ``test`` images never
changes ``train``. The generator is numpy only (no PIL, fonts or torch) and, past numpy's PCG64 ``Generator``
(whose streams numpy keeps platform-independent), computes pixels with IEEE-754 correctly-rounded operations
only (``+ - * /``, ``sqrt``, ``floor``, comparisons, min/max; no ``sin``/``exp``/``pow`` whose last bit may
depend on the CPU's SIMD path, no matrix products or BLAS, no reductions whose order could change): angles come
from normalized gaussian pairs, periodic waves are triangle waves smoothed by a cubic, blobs use a polynomial
kernel. Pixels are rounded to uint8 by ``np.clip(np.rint(x * 255), 0, 255)``. So the same call gives the same
bytes on every machine.

Shapes are rasterized from signed distance functions (SDF, in pixels, negative inside) at the 32x32 pixel
centres with the analytic anti-aliasing coverage ``clip(0.5 - d, 0, 1)`` [our choice; the SDF formulas are the
standard closed forms, e.g. Inigo Quilez, "2D distance functions"].
"""
from __future__ import annotations

import math
import zlib
from typing import Callable

import numpy as np

__all__ = ["CLASSES", "SETS", "OOD_SETS", "ID_SETS", "CHUNK", "generate", "describe"]

#: The 10 ID classes (label = index).
CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "plus", "ring", "star", "hexagon", "crescent", "heart",
                            "bar")
#: Every set ``generate`` knows.
SETS: tuple[str, ...] = ("train", "test", "backgrounds", "novel-objects", "textures", "noise", "aux")
#: The OOD test sets.
OOD_SETS: tuple[str, ...] = ("backgrounds", "novel-objects", "textures", "noise")
#: The ID splits.
ID_SETS: tuple[str, ...] = ("train", "test")
#: Images per chunk; each chunk has its own random stream (prefix stability). A multiple of 10 [our choice].
CHUNK = 200

SIDE = 32  # the images' side in pixels (32 x 32, as CIFAR)
_X = (np.arange(SIDE, dtype=np.float64) + 0.5).reshape(1, 1, SIDE)  # pixel-centre coordinates
_Y = (np.arange(SIDE, dtype=np.float64) + 0.5).reshape(1, SIDE, 1)
_SQRT3_2 = math.sqrt(3.0) / 2.0
_SQRT5 = math.sqrt(5.0)
# unit vectors at 90 + 72k degrees (pentagram), from closed forms with sqrt only
_C72, _S72 = (_SQRT5 - 1.0) / 4.0, math.sqrt(10.0 + 2.0 * _SQRT5) / 4.0
_C144, _S144 = -(_SQRT5 + 1.0) / 4.0, math.sqrt(10.0 - 2.0 * _SQRT5) / 4.0
_PENTA = ((0.0, 1.0), (-_S72, _C72), (-_S144, _C144), (_S144, _C144), (_S72, _C72))

_DESCRIPTIONS = {
    "train": "ID training split: one of 10 drawn objects (circle, square, triangle, plus, ring, star, hexagon, "
             "crescent, heart, bar) at a random position, rotation, size (about 12-42% of the image) and contrasting "
             "colour, on a procedural background (gradient, smooth value noise, soft stripes, blobs or checkers). "
             "Labels 0..9 cycle with the image index, so classes are balanced.",
    "test": "ID test split: drawn exactly like train, from an independent random stream.",
    "backgrounds": "OOD (the BFM case): the ID background generators with no object. A classifier trained with "
                   "cross-entropy alone has seen these backgrounds behind every object and tends to stay confident "
                   "on them; suppressing background features is what BFM is for.",
    "novel-objects": "OOD, near: unseen shapes (letter-like strokes, spirals, irregular polygons, clusters of dots, "
                     "zig-zags) drawn like the ID objects on the same backgrounds.",
    "textures": "OOD: full-frame textures never used in ID: fine plaid, wood-grain rings, Voronoi cells, marble "
                "veins, halftone dot lattices (stands in for DTD Textures).",
    "noise": "OOD, easy: per-pixel uniform noise (even indices) or clipped gaussian noise (odd indices), a third of "
             "them at a coarse 2x2 or 4x4 block scale.",
    "aux": "Auxiliary outlier pool for outlier exposure / Energy-OE / GReg training (stands in for 300K random "
           "images): line clutter, rectangle mosaics, radial colour-map gradients, random-walk scribbles, "
           "posterized camouflage and colour wheels, from generators disjoint from ID and from every OOD test set.",
}


# --- public API ----------------------------------------------------------------------------------------------

def generate(set_name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` images of a set: ``(uint8 (n, 32, 32, 3) HWC, int64 (n,))``; labels -1 outside ID.

    Image ``i`` is image ``i % CHUNK`` of chunk ``i // CHUNK``, drawn from the stream
    ``PCG64(SeedSequence([seed, crc32(set_name), i // CHUNK]))``: a prefix of a larger call is the smaller call.
    ``seed``: a non-negative int. Raises ``ValueError`` on an unknown set, a non-positive ``n`` or a bad seed.
    """
    _check_set(set_name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n, seed = int(n), int(seed)
    xs, ys = [], []
    for k in range(-(-n // CHUNK)):
        part = _render_chunk(set_name, seed, k)
        xs.append(_to_uint8(part["image"]))
        ys.append(part["label"])
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def describe(set_name: str) -> str:
    """One paragraph on what a set holds and why."""
    _check_set(set_name)
    return _DESCRIPTIONS[set_name]


# --- internals -----------------------------------------------------------------------------------------------

def _check_set(set_name) -> None:
    if set_name not in SETS:
        raise ValueError(f"unknown synthetic set {set_name!r}; allowed: {', '.join(SETS)}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _rng(set_name: str, seed: int, chunk: int) -> np.random.Generator:
    ss = np.random.SeedSequence([seed, zlib.crc32(set_name.encode("utf-8")), chunk])
    return np.random.Generator(np.random.PCG64(ss))


def _render_chunk(set_name: str, seed: int, chunk: int) -> dict:
    """One chunk of ``CHUNK`` images as floats in [0, 1] before rounding, with what went into them (a test hook):
    ``image`` (C, 32, 32, 3), ``label`` (C,), ``background`` (C, 32, 32, 3) or None, ``alpha`` (C, 32, 32) object
    coverage or None, ``family`` (C,) generator index within the set (the class for ID)."""
    rng = _rng(set_name, seed, chunk)
    C = CHUNK
    out = {"label": np.full(C, -1, dtype=np.int64), "background": None, "alpha": None}
    if set_name in ID_SETS or set_name in ("backgrounds", "novel-objects"):
        bg, pal = _by_family(rng, C, _BACKGROUNDS)
        out["background"] = bg
        if set_name == "backgrounds":
            img, fam = bg, None
        else:
            if set_name in ID_SETS:
                fam = (chunk * C + np.arange(C)) % len(CLASSES)
                out["label"] = fam.astype(np.int64)
                gens = _OBJECTS
            else:
                fam = rng.integers(0, len(_NOVEL), size=C)
                gens = _NOVEL
            alpha = np.zeros((C, SIDE, SIDE))
            shade = np.zeros((C, SIDE, SIDE))
            for f in range(len(gens)):
                idx = np.flatnonzero(fam == f)
                if idx.size:
                    alpha[idx], shade[idx] = gens[f](rng, idx.size)
            col = _contrasting_colour(rng, pal)
            obj = np.clip(col[:, None, None, :] * (1.0 + shade[..., None]), 0.0, 1.0)
            img = bg + (obj - bg) * alpha[..., None]
            out["alpha"] = alpha
        out["family"] = fam
    elif set_name == "noise":
        img = _noise(rng, C, chunk)
        out["family"] = (np.arange(C) + chunk * C) % 2
    else:
        gens = _TEXTURES if set_name == "textures" else _AUX
        fam = rng.integers(0, len(gens), size=C)
        img = np.zeros((C, SIDE, SIDE, 3))
        for f in range(len(gens)):
            idx = np.flatnonzero(fam == f)
            if idx.size:
                img[idx] = gens[f](rng, idx.size)
        out["family"] = fam
    if set_name != "noise":
        sigma = rng.uniform(0.0, 0.025, size=(C, 1, 1, 1))
        img = img + sigma * rng.standard_normal((C, SIDE, SIDE, 3))
    out["image"] = np.clip(img, 0.0, 1.0)
    return out


def _by_family(rng, B: int, gens):
    """Pick a generator per image, run each on its images; returns (images, palettes (B, 3, 3))."""
    fam = rng.integers(0, len(gens), size=B)
    img = np.zeros((B, SIDE, SIDE, 3))
    pal = np.zeros((B, 3, 3))
    for f in range(len(gens)):
        idx = np.flatnonzero(fam == f)
        if idx.size:
            img[idx], pal[idx] = gens[f](rng, idx.size)
    return img, pal


# --- elementwise helpers --------------------------------------------------------------------------------------

def _u(rng, B: int, lo: float, hi: float) -> np.ndarray:
    """(B, 1, 1) uniform draws, ready to broadcast against (B, 32, 32)."""
    return rng.uniform(lo, hi, size=(B, 1, 1))


def _direction(rng, B: int) -> tuple[np.ndarray, np.ndarray]:
    """A uniformly random unit vector (cos t, sin t), each (B, 1, 1): a normalized gaussian pair (no sin/cos)."""
    g = rng.standard_normal((2, B, 1, 1))
    r = np.sqrt(g[0] * g[0] + g[1] * g[1])
    ok = r > 1e-12
    r = np.where(ok, r, 1.0)
    return np.where(ok, g[0] / r, 1.0), np.where(ok, g[1] / r, 0.0)


def _local(rng, B: int, cx, cy):
    """Rotated coordinates of every pixel around centres (cx, cy), random rotation: (x', y') each (B, 32, 32)."""
    c, s = _direction(rng, B)
    dx, dy = _X - cx, _Y - cy
    return c * dx + s * dy, c * dy - s * dx


def _smooth(t):
    """Cubic smoothstep of t clipped to [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _tri(t):
    """Triangle wave |2 frac(t) - 1| in [0, 1], period 1 (1 at integers)."""
    return np.abs(2.0 * (t - np.floor(t)) - 1.0)


def _wave(t):
    """Smooth periodic wave in [0, 1] (a cosine look-alike, arithmetic only): smoothstep of the triangle wave."""
    return _smooth(_tri(t))


def _cover(d):
    """Anti-aliased coverage of a shape from its signed distance in pixels."""
    return np.clip(0.5 - d, 0.0, 1.0)


def _length(x, y):
    return np.sqrt(x * x + y * y)


def _box(x, y, hx, hy):
    """Exact SDF of an axis-aligned box of half-sizes (hx, hy)."""
    qx, qy = np.abs(x) - hx, np.abs(y) - hy
    return _length(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0)


def _segment(x, y, ax, ay, bx, by):
    """Distance from (x, y) to the segment a-b."""
    pax, pay, bax, bay = x - ax, y - ay, bx - ax, by - ay
    den = bax * bax + bay * bay
    h = np.clip((pax * bax + pay * bay) / np.where(den > 0, den, 1.0), 0.0, 1.0)
    return _length(pax - bax * h, pay - bay * h)


def _mix(a, b, t):
    """a + (b - a) t for colours a, b (B, 3) and weights t (B, 32, 32) -> (B, 32, 32, 3)."""
    a, b = a[:, None, None, :], b[:, None, None, :]
    return a + (b - a) * t[..., None]


def _paint(img, col, t):
    """Composite colour col (B, 3) over img (B, 32, 32, 3) with coverage t (B, 32, 32)."""
    return img + (col[:, None, None, :] - img) * t[..., None]


def _colour(rng, B: int) -> np.ndarray:
    return rng.random((B, 3))


def _palette(rng, B: int) -> np.ndarray:
    """Three background colours: c0 random, c1, c2 pulled from c0 toward random colours by 35-100%."""
    c0 = _colour(rng, B)
    beta = rng.uniform(0.35, 1.0, size=(B, 2, 1))
    return np.concatenate([c0[:, None], c0[:, None] + (rng.random((B, 2, 3)) - c0[:, None]) * beta], axis=1)


def _contrasting_colour(rng, pal: np.ndarray, candidates: int = 8) -> np.ndarray:
    """Among ``candidates`` random colours, the one whose smallest distance to the palette colours is largest."""
    B = pal.shape[0]
    cand = rng.random((B, candidates, 3))
    diff = cand[:, :, None, :] - pal[:, None, :, :]
    d2 = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
    best = np.argmax(np.min(d2, axis=2), axis=1)
    return cand[np.arange(B), best]


def _value_noise(rng, B: int, f_lo: float, f_hi: float, grid: int = 9) -> np.ndarray:
    """Smooth value noise in [0, 1], (B, 32, 32): a (grid+1)^2 random lattice seen through a window f cells wide
    (f uniform in [f_lo, f_hi] <= grid), interpolated with smoothstep weights."""
    g = rng.random((B, grid + 1, grid + 1))
    f = rng.uniform(f_lo, f_hi, size=(B, 1, 1))
    ox, oy = rng.random((B, 1, 1)) * (grid - f), rng.random((B, 1, 1)) * (grid - f)
    u, v = ox + _X / SIDE * f, oy + _Y / SIDE * f  # (B, 1, 32), (B, 32, 1)
    iu, iv = np.floor(u), np.floor(v)
    wu, wv = _smooth(u - iu), _smooth(v - iv)
    iu, iv = iu.astype(np.intp), iv.astype(np.intp)
    b = np.arange(B).reshape(B, 1, 1)
    g00, g01 = g[b, iv, iu], g[b, iv, iu + 1]
    g10, g11 = g[b, iv + 1, iu], g[b, iv + 1, iu + 1]
    top = g00 + (g01 - g00) * wu
    bot = g10 + (g11 - g10) * wu
    return top + (bot - top) * wv


def _pseudo_angle(x, y):
    """A monotone stand-in for atan2 in [0, 4) (the 'diamond angle'), arithmetic only."""
    p = y / (np.abs(x) + np.abs(y) + 1e-12)
    return np.where(x < 0, 2.0 - p, np.where(y < 0, 4.0 + p, p))


# --- ID backgrounds: each returns (images (B, 32, 32, 3), palette (B, 3, 3)) ----------------------------------

def _bg_gradient(rng, B):
    pal = _palette(rng, B)
    c, s = _direction(rng, B)
    t = ((_X - 16.0) * c + (_Y - 16.0) * s) / _u(rng, B, 18.0, 50.0) + 0.5 + _u(rng, B, -0.2, 0.2)
    pal[:, 2] = pal[:, 1]
    return _mix(pal[:, 0], pal[:, 1], np.clip(t, 0.0, 1.0)), pal


def _bg_value_noise(rng, B):
    pal = _palette(rng, B)
    t = _value_noise(rng, B, 1.5, 4.0)
    img = _mix(pal[:, 0], pal[:, 1], _smooth((t - 0.5) * 1.4 + 0.5))
    use3 = rng.random((B, 1, 1)) < 0.5
    t2 = _value_noise(rng, B, 1.0, 3.0)
    img = _paint(img, pal[:, 2], np.where(use3, _smooth((t2 - 0.55) * 2.0 + 0.5) * 0.8, 0.0))
    pal[~use3[:, 0, 0], 2] = pal[~use3[:, 0, 0], 1]
    return img, pal


def _bg_stripes(rng, B):
    pal = _palette(rng, B)
    c, s = _direction(rng, B)
    t = (_X * c + _Y * s) / _u(rng, B, 7.0, 16.0) + _u(rng, B, 0.0, 1.0)
    w = _smooth((_tri(t) - 0.5) * _u(rng, B, 1.0, 3.5) + 0.5)
    pal[:, 2] = pal[:, 1]
    return _mix(pal[:, 0], pal[:, 1], w), pal


def _bg_blobs(rng, B):
    pal = _palette(rng, B)
    img = np.broadcast_to(pal[:, None, None, 0], (B, SIDE, SIDE, 3)).copy()
    for _ in range(4):
        cx, cy, r = _u(rng, B, -4.0, 36.0), _u(rng, B, -4.0, 36.0), _u(rng, B, 6.0, 16.0)
        q = np.maximum(1.0 - ((_X - cx) ** 2 + (_Y - cy) ** 2) / (r * r), 0.0)
        which = rng.integers(1, 3, size=B)
        img = _paint(img, pal[np.arange(B), which], q * q * _u(rng, B, 0.6, 1.0))
    return img, pal


def _bg_checker(rng, B):
    pal = _palette(rng, B)
    x, y = _local(rng, B, _u(rng, B, 0.0, 32.0), _u(rng, B, 0.0, 32.0))
    cell = _u(rng, B, 5.0, 12.0)
    k = _u(rng, B, 1.5, 5.0)
    a = np.clip((_tri(x / (2 * cell)) - 0.5) * k, -1.0, 1.0)
    b = np.clip((_tri(y / (2 * cell)) - 0.5) * k, -1.0, 1.0)
    pal[:, 2] = pal[:, 1]
    return _mix(pal[:, 0], pal[:, 1], 0.5 + 0.5 * a * b), pal


_BACKGROUNDS = (_bg_gradient, _bg_value_noise, _bg_stripes, _bg_blobs, _bg_checker)


# --- ID objects: each returns (coverage (B, 32, 32), shading (B, 32, 32)) -------------------------------------

def _object(rng, B: int, area_factor: float, sdf: Callable, reach: float = 1.0, s_max: float = 15.5):
    """Place a shape: its size s (bounding radius, px) gives area ~ area_factor s^2 = a target area fraction
    uniform in [0.12, 0.42] of the image, capped at s_max; centre so that the shape is (mostly) inside; random
    rotation; shading a linear ramp of +-25% across the shape. ``sdf(rng, x, y, s)`` in local coordinates."""
    area = rng.uniform(0.12, 0.42, size=(B, 1, 1)) * SIDE * SIDE
    s = np.minimum(np.sqrt(area / area_factor), s_max)
    m = np.minimum(0.9 * reach * s, 16.0)
    cx = m + rng.random((B, 1, 1)) * (SIDE - 2.0 * m)
    cy = m + rng.random((B, 1, 1)) * (SIDE - 2.0 * m)
    x, y = _local(rng, B, cx, cy)
    d = sdf(rng, x, y, s)
    return _cover(d), _u(rng, B, -0.25, 0.25) * x / s


def _sdf_circle(rng, x, y, s):
    return _length(x, y) - s


def _sdf_square(rng, x, y, s):
    h = s / math.sqrt(2.0)
    return _box(x, y, h, h)


def _sdf_triangle(rng, x, y, s):
    d = np.maximum(np.maximum(y, -_SQRT3_2 * x - 0.5 * y), _SQRT3_2 * x - 0.5 * y)
    return d - 0.5 * s


def _sdf_hexagon(rng, x, y, s):
    d = np.maximum(np.maximum(np.abs(x), np.abs(0.5 * x + _SQRT3_2 * y)), np.abs(-0.5 * x + _SQRT3_2 * y))
    return d - _SQRT3_2 * s


def _sdf_plus(rng, x, y, s):
    w = s * _u(rng, x.shape[0], 0.27, 0.37)
    return np.minimum(_box(x, y, s, w), _box(x, y, w, s))


def _sdf_ring(rng, x, y, s):
    rho = _u(rng, x.shape[0], 0.45, 0.62)
    return np.abs(_length(x, y) - s * (1.0 + rho) / 2.0) - s * (1.0 - rho) / 2.0


def _sdf_star(rng, x, y, s):
    """Filled pentagram: inside iff at most one of its 5 edge lines (normals n_k, distance s cos 72 deg) is
    crossed, i.e. the second largest of the 5 half-plane distances is negative."""
    d = np.stack([nx * x + ny * y for nx, ny in _PENTA]) - _C72 * s
    return np.sort(d, axis=0)[-2]


def _sdf_crescent(rng, x, y, s):
    B = x.shape[0]
    off, rho = s * _u(rng, B, 0.35, 0.55), s * _u(rng, B, 0.75, 0.9)
    return np.maximum(_length(x, y) - s, rho - _length(x - off, y))


def _sdf_heart(rng, x, y, s):
    """Heart (Quilez's closed form, tip at the origin, lobes around (+-0.25, 0.75)), centred and scaled so its
    bounding radius is about s."""
    k = s / 0.68
    px, py = np.abs(x) / k, -y / k + 0.55
    upper = _length(px - 0.25, py - 0.75) - math.sqrt(2.0) / 4.0
    m = 0.5 * np.maximum(px + py, 0.0)
    lower = np.sqrt(np.minimum(px * px + (py - 1.0) ** 2, (px - m) ** 2 + (py - m) ** 2)) * np.sign(px - py)
    return np.where(px + py > 1.0, upper, lower) * k


def _sdf_bar(rng, x, y, s):
    r = s * _u(rng, x.shape[0], 0.22, 0.32)
    return _length(np.maximum(np.abs(x) - (s - r), 0.0), y) - r


# area factor: shape area / s^2 at the mean of its random parameters (closed forms; crescent and heart measured)
_OBJECTS = (
    lambda rng, B: _object(rng, B, math.pi, _sdf_circle),
    lambda rng, B: _object(rng, B, 2.0, _sdf_square),
    lambda rng, B: _object(rng, B, 1.299, _sdf_triangle),
    lambda rng, B: _object(rng, B, 2.15, _sdf_plus, reach=1.05),
    lambda rng, B: _object(rng, B, 2.2, _sdf_ring),
    lambda rng, B: _object(rng, B, 1.12, _sdf_star),
    lambda rng, B: _object(rng, B, 2.598, _sdf_hexagon),
    lambda rng, B: _object(rng, B, 1.3, _sdf_crescent),
    lambda rng, B: _object(rng, B, 1.95, _sdf_heart),
    lambda rng, B: _object(rng, B, 1.0, _sdf_bar),
)


# --- novel objects (OOD): strokes, spirals, irregular polygons, dots, zig-zags --------------------------------

_LETTERS = (  # polylines in unit coordinates, y down
    (((-0.5, -1.0), (-0.5, 1.0), (0.6, 1.0)),),                                                # L
    (((-0.8, -1.0), (0.8, -1.0)), ((0.0, -1.0), (0.0, 1.0))),                                  # T
    (((-0.7, -1.0), (0.7, -1.0), (-0.7, 1.0), (0.7, 1.0)),),                                   # Z
    (((-0.6, 1.0), (-0.6, -1.0), (0.6, 1.0), (0.6, -1.0)),),                                   # N
    (((0.6, -1.0), (-0.6, -1.0), (-0.6, 1.0), (0.6, 1.0)), ((-0.6, 0.0), (0.4, 0.0))),         # E
    (((-0.6, 1.0), (-0.6, -1.0), (0.5, -1.0)), ((-0.6, 0.0), (0.3, 0.0))),                     # F
    (((-0.6, -1.0), (-0.6, 1.0)), ((0.6, -1.0), (0.6, 1.0)), ((-0.6, 0.0), (0.6, 0.0))),       # H
    (((-0.8, 1.0), (0.0, -1.0), (0.8, 1.0)), ((-0.45, 0.2), (0.45, 0.2))),                     # A
    (((-0.6, -1.0), (-0.6, 1.0)), ((0.6, -1.0), (-0.6, 0.1)), ((-0.25, -0.3), (0.6, 1.0))),    # K
    (((0.6, -0.8), (0.0, -1.0), (-0.6, -0.6), (0.6, 0.6), (0.0, 1.0), (-0.6, 0.8)),),          # S
)


def _spiral_vertices(steps: int = 36, t: float = 0.2):
    """Archimedean spiral (radius growing linearly with the angle) in unit coordinates, ``steps`` segments, each a
    turn by the exact rotation ((1 - t^2), 2t) / (1 + t^2) (about 22.6 degrees for t = 0.2; 36 steps ~ 2.25 turns),
    so that no sin/cos is needed."""
    c, s = (1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)
    vx, vy, pts = 1.0, 0.0, []
    for i in range(steps + 1):
        r = 0.1 + 0.9 * i / steps
        pts.append((r * vx, r * vy))
        vx, vy = c * vx - s * vy, s * vx + c * vy
    return (tuple(pts),)


_SPIRAL = _spiral_vertices()


def _place_novel(rng, B, area_lo=0.12, area_hi=0.4, s_lo=7.0, s_hi=15.0):
    s = _u(rng, B, s_lo, s_hi)
    m = np.minimum(0.9 * s, 16.0)
    cx = m + rng.random((B, 1, 1)) * (SIDE - 2.0 * m)
    cy = m + rng.random((B, 1, 1)) * (SIDE - 2.0 * m)
    x, y = _local(rng, B, cx, cy)
    return x, y, s


def _polylines_sdf(x, y, s, strokes, half_width):
    d = np.full(x.shape, np.inf)
    for line in strokes:
        for (ax, ay), (bx, by) in zip(line[:-1], line[1:]):
            d = np.minimum(d, _segment(x, y, ax * s, ay * s, bx * s, by * s))
    return d - half_width


def _novel_letters(rng, B):
    x, y, s = _place_novel(rng, B, s_lo=9.0, s_hi=15.0)
    hw = _u(rng, B, 1.0, 2.2)
    which = rng.integers(0, len(_LETTERS), size=B)
    d = np.zeros((B, SIDE, SIDE))
    for j, strokes in enumerate(_LETTERS):
        idx = np.flatnonzero(which == j)
        if idx.size:
            d[idx] = _polylines_sdf(x[idx], y[idx], s[idx] * 0.85, strokes, hw[idx])
    return _cover(d), _u(rng, B, -0.25, 0.25) * x / s


def _novel_spiral(rng, B):
    x, y, s = _place_novel(rng, B, s_lo=10.0, s_hi=15.5)
    mirror = np.where(rng.random((B, 1, 1)) < 0.5, -1.0, 1.0)
    d = _polylines_sdf(x, y * mirror, s, _SPIRAL, _u(rng, B, 0.9, 1.6))
    return _cover(d), _u(rng, B, -0.25, 0.25) * x / s


def _novel_polygon(rng, B, k: int = 7):
    """Irregular star-shaped polygon: k vertices at jittered pseudo-angles, radii 0.35-1 (s)."""
    x, y, s = _place_novel(rng, B, s_lo=9.0, s_hi=15.0)
    pa = (np.arange(k) + rng.uniform(-0.35, 0.35, size=(B, k))) * (4.0 / k)  # diamond angle in [0, 4)
    # diamond angle -> point on |x| + |y| = 1 -> unit vector
    q = pa % 4.0
    dx = np.where(q < 1, 1 - q, np.where(q < 2, 1 - q, np.where(q < 3, q - 3, q - 3)))
    dy = np.where(q < 1, q, np.where(q < 2, 2 - q, np.where(q < 3, 2 - q, q - 4)))
    nrm = np.sqrt(dx * dx + dy * dy)
    rad = rng.uniform(0.35, 1.0, size=(B, k)) * s[:, :, 0]
    vx, vy = (dx / nrm * rad)[:, :, None, None], (dy / nrm * rad)[:, :, None, None]
    dist = np.full((B, SIDE, SIDE), np.inf)
    inside = np.zeros((B, SIDE, SIDE), dtype=bool)
    for i in range(k):
        j = (i + 1) % k
        ax, ay, bx, by = vx[:, i], vy[:, i], vx[:, j], vy[:, j]
        dist = np.minimum(dist, _segment(x, y, ax, ay, bx, by))
        crosses = (ay > y) != (by > y)
        dyab = np.where(by != ay, by - ay, 1.0)
        inside ^= crosses & (x < (bx - ax) * (y - ay) / dyab + ax)
    return _cover(np.where(inside, -dist, dist)), _u(rng, B, -0.25, 0.25) * x / s


def _novel_dots(rng, B, k: int = 9):
    x, y, s = _place_novel(rng, B, s_lo=8.0, s_hi=14.0)
    count = rng.integers(4, k + 1, size=(B, 1, 1))
    d = np.full((B, SIDE, SIDE), np.inf)
    for i in range(k):
        px, py = _u(rng, B, -1.0, 1.0) * s, _u(rng, B, -1.0, 1.0) * s
        r = _u(rng, B, 1.3, 2.8)
        d = np.minimum(d, np.where(i < count, _length(x - px, y - py) - r, np.inf))
    return _cover(d), _u(rng, B, -0.25, 0.25) * x / s


def _novel_zigzag(rng, B, k: int = 6):
    x, y, s = _place_novel(rng, B, s_lo=10.0, s_hi=15.5)
    amp = _u(rng, B, 0.25, 0.6)
    d = np.full((B, SIDE, SIDE), np.inf)
    for i in range(k - 1):
        ax, bx = -1.0 + 2.0 * i / (k - 1), -1.0 + 2.0 * (i + 1) / (k - 1)
        ay, by = amp * (1 if i % 2 else -1), amp * (-1 if i % 2 else 1)
        d = np.minimum(d, _segment(x, y, ax * s, ay * s, bx * s, by * s))
    d = d - _u(rng, B, 1.0, 2.0)
    return _cover(d), _u(rng, B, -0.25, 0.25) * x / s


_NOVEL = (_novel_letters, _novel_spiral, _novel_polygon, _novel_dots, _novel_zigzag)


# --- textures (OOD): each returns images (B, 32, 32, 3) -------------------------------------------------------

def _tex_plaid(rng, B):
    pal = _palette(rng, B)
    x, y = _local(rng, B, 16.0, 16.0)
    wu = _smooth((_tri(x / _u(rng, B, 2.2, 4.5) + _u(rng, B, 0, 1)) - 0.5) * 2.5 + 0.5)
    wv = _smooth((_tri(y / _u(rng, B, 2.2, 4.5) + _u(rng, B, 0, 1)) - 0.5) * 2.5 + 0.5)
    img = _mix(pal[:, 0], pal[:, 1], 0.65 * wu)
    return _paint(img, pal[:, 2], 0.55 * wv)


def _tex_wood(rng, B):
    pal = _palette(rng, B)
    cx, cy = _u(rng, B, -24.0, 56.0), _u(rng, B, -24.0, 56.0)
    aniso = _u(rng, B, 0.3, 1.0)
    x, y = _local(rng, B, cx, cy)
    r = _length(x, y * aniso)
    t = r / _u(rng, B, 1.8, 3.5) + _u(rng, B, 0.5, 2.0) * _value_noise(rng, B, 2.0, 5.0)
    g = t - np.floor(t)
    return _mix(pal[:, 0], pal[:, 1], _smooth(g * 1.3) * (1.0 - _smooth((g - 0.85) * 6.7)))


def _tex_cells(rng, B, k: int = 24):
    pal = _palette(rng, B)
    count = rng.integers(10, k + 1, size=(B, 1, 1))
    px, py = rng.uniform(-2.0, 34.0, size=(2, B, k, 1, 1))
    f1 = np.full((B, SIDE, SIDE), np.inf)
    f2 = np.full((B, SIDE, SIDE), np.inf)
    nearest = np.zeros((B, SIDE, SIDE), dtype=np.intp)
    for i in range(k):
        d = np.where(i < count, (_X - px[:, i]) ** 2 + (_Y - py[:, i]) ** 2, np.inf)
        closer = d < f1
        f2 = np.where(closer, f1, np.minimum(f2, d))
        nearest = np.where(closer, i, nearest)
        f1 = np.where(closer, d, f1)
    tone = rng.random((B, k))
    cellcol = _mix(pal[:, 0], pal[:, 1], np.take_along_axis(tone, nearest.reshape(B, -1), 1).reshape(B, SIDE, SIDE))
    edge = np.clip((np.sqrt(f2) - np.sqrt(f1)) / _u(rng, B, 0.8, 2.0), 0.0, 1.0)
    return _paint(cellcol, pal[:, 2] * 0.3, 1.0 - edge)


def _tex_marble(rng, B):
    pal = _palette(rng, B)
    x, _ = _local(rng, B, 16.0, 16.0)
    turb = np.zeros((B, SIDE, SIDE))
    for octave, (lo, hi) in enumerate(((1.5, 3.0), (3.0, 6.0), (6.0, 8.5))):
        turb = turb + np.abs(2.0 * _value_noise(rng, B, lo, hi) - 1.0) * 0.5 ** octave
    t = x / _u(rng, B, 8.0, 20.0) + _u(rng, B, 1.0, 3.0) * turb
    w = _wave(t)
    return _mix(pal[:, 0], pal[:, 1], w * w * w)


def _tex_halftone(rng, B):
    pal = _palette(rng, B)
    x, y = _local(rng, B, 0.0, 0.0)
    p = _u(rng, B, 3.0, 5.5)
    fx, fy = x / p, y / p
    lx, ly = (fx - np.floor(fx) - 0.5) * p, (fy - np.floor(fy) - 0.5) * p
    rad = p * (0.12 + 0.4 * _value_noise(rng, B, 1.0, 3.0))
    return _mix(pal[:, 0], pal[:, 1], _cover(_length(lx, ly) - rad))


_TEXTURES = (_tex_plaid, _tex_wood, _tex_cells, _tex_marble, _tex_halftone)


# --- noise (OOD) ----------------------------------------------------------------------------------------------

def _noise(rng, C: int, chunk: int) -> np.ndarray:
    """Even global indices: U[0, 1]; odd: N(mu, sigma) clipped, mu in [0.3, 0.7], sigma in [0.15, 0.35] per channel.
    A third of the images are drawn at block size 2 or 4 (nearest upsampling)."""
    gauss = ((np.arange(C) + chunk * C) % 2 == 1)[:, None, None, None]
    u = rng.random((C, SIDE, SIDE, 3))
    g = rng.uniform(0.3, 0.7, size=(C, 1, 1, 3)) + rng.uniform(0.15, 0.35, size=(C, 1, 1, 3)) * \
        rng.standard_normal((C, SIDE, SIDE, 3))
    img = np.where(gauss, g, u)
    block = rng.choice(np.array([1, 1, 1, 1, 2, 4]), size=C)
    for b in (2, 4):
        idx = np.flatnonzero(block == b)
        img[idx] = np.repeat(np.repeat(img[idx][:, ::b, ::b], b, axis=1), b, axis=2)
    return np.clip(img, 0.0, 1.0)


# --- auxiliary outliers (disjoint generators) -----------------------------------------------------------------

def _aux_lines(rng, B, k: int = 12):
    img = np.broadcast_to(_colour(rng, B)[:, None, None], (B, SIDE, SIDE, 3)).copy()
    count = rng.integers(5, k + 1, size=(B, 1, 1))
    for i in range(k):
        ax, ay, bx, by = (_u(rng, B, -4.0, 36.0) for _ in range(4))
        d = _segment(_X, _Y, ax, ay, bx, by) - _u(rng, B, 0.3, 1.3)
        img = _paint(img, _colour(rng, B), np.where(i < count, _cover(d), 0.0))
    return img


def _aux_mosaic(rng, B, k: int = 10):
    img = np.broadcast_to(_colour(rng, B)[:, None, None], (B, SIDE, SIDE, 3)).copy()
    count = rng.integers(4, k + 1, size=(B, 1, 1))
    for i in range(k):
        cx, cy = _u(rng, B, 0.0, 32.0), _u(rng, B, 0.0, 32.0)
        d = _box(_X - cx, _Y - cy, _u(rng, B, 2.0, 12.0), _u(rng, B, 2.0, 12.0))
        border = rng.random((B, 1, 1)) < 0.5
        img = _paint(img, np.zeros((B, 3)), np.where((i < count) & border, _cover(d), 0.0))
        img = _paint(img, _colour(rng, B), np.where(i < count, _cover(d + np.where(border, 1.0, 0.0)), 0.0))
    return img


def _aux_radial(rng, B, stops: int = 4):
    cx, cy = _u(rng, B, -8.0, 40.0), _u(rng, B, -8.0, 40.0)
    t = np.clip(_length(_X - cx, _Y - cy) / _u(rng, B, 14.0, 45.0), 0.0, 1.0) * (stops - 1)
    seg = np.minimum(np.floor(t), stops - 2).astype(np.intp)
    cols = rng.random((B, stops, 3))
    b = np.arange(B).reshape(B, 1, 1)
    lo, hi = cols[b, seg], cols[b, seg + 1]
    return lo + (hi - lo) * (t - seg)[..., None]


def _aux_scribble(rng, B, strokes: int = 2, k: int = 14):
    img = np.broadcast_to(_colour(rng, B)[:, None, None], (B, SIDE, SIDE, 3)).copy()
    for _ in range(strokes):
        px, py = _u(rng, B, 6.0, 26.0), _u(rng, B, 6.0, 26.0)
        vx, vy = _direction(rng, B)
        step = _u(rng, B, 2.5, 5.0)
        d = np.full((B, SIDE, SIDE), np.inf)
        for _ in range(k):
            gx, gy = _direction(rng, B)
            vx, vy = vx + 0.9 * gx, vy + 0.9 * gy
            nrm = np.maximum(_length(vx, vy), 1e-9)
            vx, vy = vx / nrm, vy / nrm
            qx, qy = np.clip(px + step * vx, -2.0, 34.0), np.clip(py + step * vy, -2.0, 34.0)
            d = np.minimum(d, _segment(_X, _Y, px, py, qx, qy))
            px, py = qx, qy
        img = _paint(img, _colour(rng, B), _cover(d - _u(rng, B, 0.7, 2.0)))
    return img


def _aux_camo(rng, B, levels: int = 4):
    t = _value_noise(rng, B, 2.0, 5.0)
    th = np.sort(rng.uniform(0.25, 0.75, size=(B, levels - 1)), axis=1)
    img = np.broadcast_to(_colour(rng, B)[:, None, None], (B, SIDE, SIDE, 3)).copy()
    for j in range(levels - 1):
        img = _paint(img, _colour(rng, B), np.clip((t - th[:, j, None, None]) * 60.0 + 0.5, 0.0, 1.0))
    return img


def _aux_wheel(rng, B, k: int = 8):
    cx, cy = _u(rng, B, 4.0, 28.0), _u(rng, B, 4.0, 28.0)
    sectors = rng.integers(3, k + 1, size=(B, 1, 1))
    a = _pseudo_angle(_X - cx, _Y - cy) / 4.0 + _u(rng, B, 0.0, 1.0)
    sec = np.floor((a - np.floor(a)) * sectors).astype(np.intp)
    cols = rng.random((B, k, 3))
    img = cols[np.arange(B).reshape(B, 1, 1), sec]
    fade = np.clip(_length(_X - cx, _Y - cy) / _u(rng, B, 20.0, 60.0), 0.0, 1.0)
    return _paint(img, _colour(rng, B), fade * _u(rng, B, 0.0, 0.8))


_AUX = (_aux_lines, _aux_mosaic, _aux_radial, _aux_scribble, _aux_camo, _aux_wheel)
