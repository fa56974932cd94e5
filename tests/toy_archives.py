"""Toy copies of every paper profile's download, in each set's official file format, for the rehearsal.

``build(folder)`` writes, in one flat folder (a mirror serves files by their name), a few images each of:

* ``cifar-10-python.tar.gz``: ``cifar-10-batches-py/`` ``data_batch_1..5``, ``test_batch``, ``batches.meta`` (python
  pickles: ``data`` uint8 (N, 3072) rows of R, G, B planes, ``labels``, ``filenames``; meta ``label_names``);
* ``cifar-100-python.tar.gz``: ``cifar-100-python/`` ``train``, ``test`` (``fine_labels``, ``coarse_labels``),
  ``meta`` (``fine_label_names``, ``coarse_label_names``);
* ``test_32x32.mat`` (SVHN, MATLAB v5: ``X`` uint8 (32, 32, 3, N), ``y`` (N, 1) in 1..10);
* ``dtd-r1.0.1.tar.gz`` (``dtd/images/<category>/*.jpg``), ``test_256.tar`` (Places365, ``test_256/*.jpg``),
  ``LSUN.tar.gz`` (``LSUN/test/*.jpg``, 36x36), ``LSUN_resize.tar.gz`` (``LSUN_resize/*.jpg``), ``iSUN.tar.gz``
  (``iSUN/iSUN_patches/*.jpeg``), ``300K_random_images.npy`` (uint8 (N, 32, 32, 3));
* the MOS ImageNet OOD sets ``iNaturalist.tar.gz``, ``SUN.tar.gz``, ``Places.tar.gz`` (``<set>/images/*.jpg``).

``dtd_tarball(path)`` and ``tiny_imagenet_zip(path)`` write the official archives the derived sets ``dtd10`` and
``tinyimagenet32`` are derived from (tests/test_derived_sources.py): more categories than the first-10 rule keeps,
odd image sizes, files the derivations must ignore, a grayscale JPEG.

``imagenet_tree(root)`` lays out ``<root>/imagenet/{train,val}/<wnid>/*.JPEG``: 1,000 class folders whose sorted
order puts GReg's subset classes where ``ood.benchmark``'s permutation rule expects them, so that both the ID subset
and the ``imagenet-other`` auxiliary classes (one image each) are found. ``build`` returns the
``$OOD_TEST_CHECKSUMS`` table of the files written (and of the CIFAR members inside their archives).

ID images are learnable at once: class ``k`` is a flat colour of a palette plus a little noise, so that a toy
training of a few steps clears the train notebook's "above chance" check; only ``ID_CLASSES`` classes are used.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np

#: Classes with images in the toy ID sets (CIFAR-100 and ImageNet use the first ones of theirs).
ID_CLASSES = 2
#: Images per split and set.
N_TRAIN, N_TEST, N_OOD, N_AUX = 48, 24, 12, 48

_PALETTE = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 230], [235, 225, 40], [200, 40, 210], [40, 210, 210],
                     [250, 140, 20], [120, 120, 120], [20, 20, 20], [250, 250, 250]], np.int16)


def _id_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, size, size, 3) flat-colour images of classes 0..ID_CLASSES-1 (balanced) and their labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % ID_CLASSES
    x = _PALETTE[y][:, None, None, :] + rng.integers(-12, 13, (n, size, size, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def _noise(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _jpeg(img: np.ndarray, fmt: str = "JPEG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> None:
    """A tar archive (gzip when ``path`` ends in .gz) of ``members`` {name: bytes}, with fixed times (same bytes)."""
    with open(path, "wb") as raw:
        if path.name.endswith(".gz"):
            import gzip

            fobj = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
        else:
            fobj = raw
        with tarfile.open(fileobj=fobj, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted({str(Path(n).parent) for n in members} - {"."}):
                for d in [*reversed(Path(name).parents[:-1]), Path(name)]:
                    if f"{d}/" in members:
                        continue
                    info = tarfile.TarInfo(str(d))
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    members[f"{d}/"] = b""
                    tar.addfile(info)
            for name, data in members.items():
                if name.endswith("/"):
                    continue
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        if fobj is not raw:
            fobj.close()


def _cifar_batch(x: np.ndarray, y: np.ndarray, label_key: str, tag: str) -> dict:
    """A CIFAR python-pickle batch: ``data`` rows are the R, then G, then B plane of each image (row-major)."""
    d = {"batch_label": tag, label_key: [int(v) for v in y],
         "data": np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1),
         "filenames": [f"toy_{tag}_{i}.png" for i in range(len(x))]}
    if label_key == "fine_labels":
        d["coarse_labels"] = [int(v) // 5 for v in y]
    return d


def _pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _folder_members(prefix: str, n: int, size: int, seed: int, ext: str = "jpg") -> dict[str, bytes]:
    return {f"{prefix}/{i:05d}.{ext}": _jpeg(img) for i, img in enumerate(_noise(n, size, seed))}


def build(folder: Path) -> dict[str, str]:
    """Write every toy archive into ``folder``; their checksums {registry file path: "md5:<hex>"}, the CIFAR
    members inside the archives included (the ``$OOD_TEST_CHECKSUMS`` table)."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    inner: dict[str, bytes] = {}

    # CIFAR-10: 5 training batches, a test batch, batches.meta
    x, y = _id_images(N_TRAIN, 32, 10)
    members = {}
    for i, part in enumerate(np.array_split(np.arange(N_TRAIN), 5), start=1):
        members[f"cifar-10-batches-py/data_batch_{i}"] = _pickle(_cifar_batch(x[part], y[part], "labels", f"b{i}"))
    xt, yt = _id_images(N_TEST, 32, 11)
    members["cifar-10-batches-py/test_batch"] = _pickle(_cifar_batch(xt, yt, "labels", "test"))
    members["cifar-10-batches-py/batches.meta"] = _pickle({"label_names": ["airplane", "automobile", "bird", "cat",
                                                                           "deer", "dog", "frog", "horse", "ship",
                                                                           "truck"],
                                                           "num_cases_per_batch": 10000, "num_vis": 3072})
    inner.update(members)
    _tar(folder / "cifar-10-python.tar.gz", dict(members))
    out["cifar-10-python.tar.gz"] = folder / "cifar-10-python.tar.gz"

    # CIFAR-100: train, test, meta
    x, y = _id_images(N_TRAIN, 32, 20)
    xt, yt = _id_images(N_TEST, 32, 21)
    members = {"cifar-100-python/train": _pickle(_cifar_batch(x, y, "fine_labels", "train")),
               "cifar-100-python/test": _pickle(_cifar_batch(xt, yt, "fine_labels", "test")),
               "cifar-100-python/meta": _pickle({"fine_label_names": [f"fine{i}" for i in range(100)],
                                                 "coarse_label_names": [f"coarse{i}" for i in range(20)]})}
    inner.update(members)
    _tar(folder / "cifar-100-python.tar.gz", dict(members))
    out["cifar-100-python.tar.gz"] = folder / "cifar-100-python.tar.gz"

    # SVHN test_32x32.mat
    xs = _noise(N_OOD, 32, 30)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": np.ascontiguousarray(xs.transpose(1, 2, 3, 0)),
                                                 "y": (np.arange(N_OOD) % 10 + 1).reshape(-1, 1).astype(np.uint8)})
    out["svhn/test_32x32.mat"] = folder / "test_32x32.mat"

    # image-folder archives
    dtd = {}
    for c, cat in enumerate(["banded", "blotchy", "braided"]):
        dtd.update(_folder_members(f"dtd/images/{cat}", N_OOD // 3, 48, 40 + c))
    tars = {
        "dtd/dtd-r1.0.1.tar.gz": ("dtd-r1.0.1.tar.gz", dtd),
        "places365/test_256.tar": ("test_256.tar", _folder_members("test_256", N_OOD, 64, 50)),
        "LSUN.tar.gz": ("LSUN.tar.gz", _folder_members("LSUN/test", N_OOD, 36, 51)),
        "LSUN_resize.tar.gz": ("LSUN_resize.tar.gz", _folder_members("LSUN_resize", N_OOD, 32, 52)),
        "iSUN.tar.gz": ("iSUN.tar.gz", _folder_members("iSUN/iSUN_patches", N_OOD, 32, 53, "jpeg")),
    }
    for i, mos in enumerate(["iNaturalist", "SUN", "Places"]):
        tars[f"{mos}.tar.gz"] = (f"{mos}.tar.gz", _folder_members(f"{mos}/images", N_OOD, 48, 60 + i))
    for reg, (fname, members) in tars.items():
        _tar(folder / fname, members)
        out[reg] = folder / fname

    # 300K random images
    np.save(folder / "300K_random_images.npy", _noise(N_AUX, 32, 70))
    out["300K_random_images.npy"] = folder / "300K_random_images.npy"
    table = {k: _md5(p.read_bytes()) for k, p in out.items()}
    table.update({k: _md5(v) for k, v in inner.items()})
    return table


#: The first 12 of DTD's 47 categories in sorted order (the derivation of dtd10 keeps the first 10).
DTD_CATEGORIES = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
                  "crosshatched", "crystalline", "dotted", "fibrous")
#: (width, height) of the toy DTD images, in turn: both orientations, a long side that floor and round tell apart
#: (301x451: 32 * 451 / 301 = 47.9), a centre offset with a half (333x300: (35 - 32) / 2 = 1.5), a square.
DTD_SIZES = ((300, 451), (451, 300), (301, 451), (333, 300), (300, 333), (320, 320))


def _smooth(w: int, h: int, seed: int, mode: str = "RGB") -> bytes:
    """A JPEG of ``w`` x ``h``: random colours at 1/20 of the size, upscaled bicubically (texture-like, small)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 20, 2), max(w // 20, 2), 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def dtd_tarball(path: Path, categories: int = 12, per_category: int = 2, seed: int = 90) -> Path:
    """A toy ``dtd-r1.0.1.tar.gz`` in the official layout: ``dtd/images/<category>/<category>_<n>.jpg`` for the first
    ``categories`` names of ``DTD_CATEGORIES`` (written in reverse order, so that the derivation must sort them),
    sizes from ``DTD_SIZES`` in turn, the first image grayscale; also files the derivation ignores: a .png and a .txt
    among the images, ``dtd/labels/labels_joint_anno.txt`` and ``dtd/imdb/imdb.mat``."""
    members: dict[str, bytes] = {}
    k = 0
    for cat in reversed(DTD_CATEGORIES[:categories]):
        for i in range(per_category):
            w, h = DTD_SIZES[k % len(DTD_SIZES)]
            members[f"dtd/images/{cat}/{cat}_{i + 1:04d}.jpg"] = _smooth(w, h, seed + k, "L" if k == 0 else "RGB")
            k += 1
    members[f"dtd/images/{DTD_CATEGORIES[0]}/extra.png"] = _jpeg(_noise(1, 40, seed)[0], "PNG")
    members[f"dtd/images/{DTD_CATEGORIES[1]}/notes.txt"] = b"not an image\n"
    members["dtd/labels/labels_joint_anno.txt"] = b"banded/banded_0001.jpg banded\n"
    members["dtd/imdb/imdb.mat"] = b"MATLAB 5.0 MAT-file (toy)"
    _tar(path, members)
    return path


#: The toy TinyImageNet classes (real wnids of TinyImageNet-200).
TINY_WNIDS = ("n01443537", "n01629819", "n02099601")


def tiny_imagenet_zip(path: Path, per_class: int = 3, seed: int = 95) -> Path:
    """A toy ``tiny-imagenet-200.zip`` in the official layout: ``tiny-imagenet-200/`` ``wnids.txt``, ``words.txt``,
    ``train/<wnid>/images/<wnid>_<n>.JPEG`` (64x64, the first one grayscale) and ``train/<wnid>/<wnid>_boxes.txt``,
    ``val/images/val_0.JPEG`` with ``val/val_annotations.txt``, ``test/images/test_0.JPEG``; fixed times (the same
    bytes each time)."""
    base = "tiny-imagenet-200"
    members: dict[str, bytes] = {f"{base}/wnids.txt": "".join(f"{w}\n" for w in TINY_WNIDS).encode(),
                                 f"{base}/words.txt": "".join(f"{w}\ttoy class {i}\n"
                                                             for i, w in enumerate(TINY_WNIDS)).encode()}
    k = 0
    for w in TINY_WNIDS:
        boxes = []
        for i in range(per_class):
            members[f"{base}/train/{w}/images/{w}_{i}.JPEG"] = _smooth(64, 64, seed + k, "L" if k == 0 else "RGB")
            boxes.append(f"{w}_{i}.JPEG\t0\t0\t63\t63\n")
            k += 1
        members[f"{base}/train/{w}/{w}_boxes.txt"] = "".join(boxes).encode()
    members[f"{base}/val/images/val_0.JPEG"] = _smooth(64, 64, seed + 100)
    members[f"{base}/val/val_annotations.txt"] = f"val_0.JPEG\t{TINY_WNIDS[0]}\t0\t0\t63\t63\n".encode()
    members[f"{base}/test/images/test_0.JPEG"] = _smooth(64, 64, seed + 101)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted({str(Path(n).parent) + "/" for n in members}):
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), b"")
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return path


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def write_checksums(table: dict[str, str], path: Path) -> Path:
    """``table`` as the JSON file ``$OOD_TEST_CHECKSUMS`` names."""
    path.write_text(json.dumps(table, indent=1, sort_keys=True))
    return path


def _fake_wnids(subset: list[str]) -> list[str]:
    """1,000 sorted wnid-like names in which the subset's wnid of label L sits at the k with perm[k] == L (the
    permutation of ``ood.benchmark.IMAGENET_AUX_RULE``), the other names interpolated in between."""
    from ood.benchmark import IMAGENET_AUX_RULE

    perm = np.random.RandomState(IMAGENET_AUX_RULE["seed"]).permutation(1000)
    anchors = {k: int(subset[p][1:]) for k, p in enumerate(perm) if p < len(subset)}
    ks = sorted(anchors)
    vals = []
    for k in range(1000):
        if k in anchors:
            v = anchors[k]
        elif k < ks[0]:
            v = anchors[ks[0]] - (ks[0] - k)
        elif k > ks[-1]:
            v = anchors[ks[-1]] + (k - ks[-1])
        else:
            a = max(j for j in ks if j < k)
            b = min(j for j in ks if j > k)
            v = anchors[a] + (k - a) * (anchors[b] - anchors[a]) // (b - a)
        vals.append(v)
    names = [f"n{v:08d}" for v in vals]
    assert names == sorted(names) and len(set(names)) == 1000, "the fake wnids must sort in the rule's order"
    return names


def imagenet_tree(root: Path, subset: str = "imagenet10", size: int = 48) -> Path:
    """``<root>/imagenet/{train,val}/<wnid>/*.JPEG``: the subset's first ``ID_CLASSES`` classes with toy ID images
    (train ``N_TRAIN``, val ``N_TEST`` in all), its other classes and every other class one noise image each."""
    from ood.benchmark import load_imagenet_subset

    ids = load_imagenet_subset(subset)
    base = root / "imagenet"
    x, y = _id_images(N_TRAIN, size, 80)
    xv, yv = _id_images(N_TEST, size, 81)
    noise = _noise(1000, size, 82)
    for k, w in enumerate(_fake_wnids(ids)):
        for split in ("train", "val"):
            (base / split / w).mkdir(parents=True, exist_ok=True)
        if w in ids and ids.index(w) < ID_CLASSES:
            c = ids.index(w)
            for i in np.flatnonzero(y == c):
                (base / "train" / w / f"{w}_{i}.JPEG").write_bytes(_jpeg(x[i]))
            for i in np.flatnonzero(yv == c):
                (base / "val" / w / f"{w}_val_{i}.JPEG").write_bytes(_jpeg(xv[i]))
        else:
            (base / "train" / w / f"{w}_0.JPEG").write_bytes(_jpeg(noise[k]))
            if w in ids:
                (base / "val" / w / f"{w}_val_0.JPEG").write_bytes(_jpeg(noise[k]))
    return base
