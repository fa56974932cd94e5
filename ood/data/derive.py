"""Derived sets: ``dtd10`` and TinyImageNet-32 (``DatasetInfo.derivation``), located as our derived copy or derived
from their official archives by the transform the registry states.

* :func:`locate_derived`: the set's folder from (a) our derived copy (under the root, in ``SHARED_DATA``, at the
  mirrors; its sha256 enforced), else (b) the official archive (under the root, at the mirrors or, with
  ``download``, at its official URL; its checksum enforced) turned into the folder by :func:`derive_set`; neither:
  one ``DataMissingError`` naming both. ``ood.data.folders`` calls it for a derived set whose folder is absent.
* :func:`derive_set`: the stated transform (``describe(name, full=True)``), atomic (a temporary folder renamed when
  complete), deterministic (PNG with Pillow's defaults), recorded in ``<folder>/DERIVED.json``
  (:data:`DERIVED_MANIFEST`).
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import sys
import tempfile
from pathlib import Path

from ood.data import fetching
from ood.data.fetching import (
    DataMissingError,
    archive_candidates,
    extract,
    missing_error,
    tried_text,
    try_fetch,
    verify,
)
from ood.data.registry import DatasetInfo, dataset_info, mirror_list

__all__ = ["DERIVED_MANIFEST", "locate_derived", "derive_set"]

#: The manifest every derivation writes into the set's folder (source archive, checksum, transform, versions, count).
DERIVED_MANIFEST = "DERIVED.json"


def locate_derived(info: DatasetInfo, root: Path, download: bool, found) -> Path:
    """The folder of a derived set (``info.derivation``), absent under the root: (a) our derived copy
    ``info.files[0]`` under the root, in ``SHARED_DATA`` or at the mirrors (its sha256 enforced), extracted; else
    (b) the official archive ``info.files[1]`` under the root, at the mirrors or, with ``download``, at its official
    URL (its checksum enforced), derived by ``derive_set``. None of them: the one-line DataMissingError naming both."""
    copy = info.files[0]
    archive = next((p for p in archive_candidates(info, root) if p.is_file()), None)
    tried_copy: list = []
    if archive is None:
        archive, tried_copy = try_fetch(info.name, copy, root, official=False)
    if archive is not None:
        verify(archive, copy)
        extract(archive, root / (copy.extract_to or ""))
        folder = found()
        if folder is None:
            raise DataMissingError(f"{info.name}: {archive} was extracted into {root / (copy.extract_to or '')} but "
                                   f"holds none of the folders {', '.join(info.folders)} with images; check the "
                                   "archive.")
        return folder
    if len(info.files) < 2:                      # an entry without its official archive: only our copy
        raise missing_error(info.name, root / copy.path, copy, root, tried=tried_copy)
    official = info.files[1]
    src, tried = try_fetch(info.name, official, root, official=False)
    if src is None and download:
        src, failed = try_fetch(info.name, official, root, mirrors=[], official=True)
        tried += failed
    if src is None:
        raise _derived_missing(info, root, download, tried_copy, tried)
    derive_set(info.name, src, _derived_folder(info, root))
    folder = found()
    if folder is None:
        raise DataMissingError(f"{info.name}: the derivation from {src} wrote none of the folders "
                               f"{', '.join(info.folders)} with images; check the archive.")
    return folder


def _derived_folder(info: DatasetInfo, root: Path) -> Path:
    """The folder a derivation writes (``<root>/dtd10-32``, ``<root>/tinyimagenet32``)."""
    return root / Path(info.folders[0]).parts[0]


def _derived_missing(info: DatasetInfo, root: Path, download: bool, tried_copy: list, tried: list) -> DataMissingError:
    copy, official = info.files[0], info.files[1]
    cname, oname = Path(copy.path).name, Path(official.path).name
    where = [str(root / copy.path)] + ([] if root / copy.path == fetching.SHARED_DATA / cname
                                       else [str(fetching.SHARED_DATA / cname)])
    ms = mirror_list()
    at = f"; not at the mirrors tried: {tried_text(tried_copy)}" if tried_copy else ""
    got = (f"; tried: {tried_text(tried)}" if tried else
           f"; looked for at {root / official.path}" + (f" and <mirror>/{oname}" if ms else ""))
    dl = ("" if download else f", or call load({info.name!r}, download=True) (a profile: benchmark.download: true) "
          "where the network is reachable")
    return DataMissingError(
        f"{info.name}: missing {root / info.folders[0]}; neither our derived copy {cname} ({copy.checksum}; looked "
        f"for at {', '.join(where)}{at}) nor the official archive {oname} ({official.checksum}{got}) was found: "
        f"download {official.url} and put it at {root / official.path} (the set is then derived from it by the "
        f"transform describe({info.name!r}, full=True) states){dl}; or put {cname} at {root / copy.path}.")


def _bilinear():
    from PIL import Image

    return getattr(Image, "Resampling", Image).BILINEAR


def _shorter_side_crop(img, size: int = 32):
    """The DTD-10 transform on a PIL RGB image: shorter side to ``size`` (long side floor(size * long / short)),
    Pillow bilinear (antialiased when reducing), then the centre ``size`` x ``size`` at round((w - size) / 2),
    round((h - size) / 2) (Python's round): torchvision's resize(img, size) + center_crop(img, size) on PIL."""
    w, h = img.size
    nw, nh = (size, size * h // w) if w <= h else (size * w // h, size)
    img = img.resize((nw, nh), _bilinear())
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _save_png(img, path: Path) -> None:
    """Write ``img`` as PNG with Pillow's defaults (no text chunks, no time): the same pixels give the same bytes
    with the same Pillow and zlib."""
    img.save(path, format="PNG")


def _member_parts(name: str) -> list[str] | None:
    """An archive member name as its path parts (a leading ``./`` dropped); None when a part is empty, ``.``,
    ``..`` or hidden (starts with ``.``)."""
    name = name[2:] if name.startswith("./") else name
    parts = name.split("/")
    return None if any(not p or p.startswith(".") for p in parts) else parts


def _derive_dtd10(archive: Path, out: Path, bar) -> tuple[int, list[str]]:
    """dtd/images/<category>/<name>.jpg of the first 10 categories (sorted) -> out/<category>/<name>.png."""
    import tarfile

    from PIL import Image

    with tarfile.open(archive) as tar:
        jpgs = []
        for m in tar.getmembers():
            parts = _member_parts(m.name) if m.isfile() else None
            if (parts and len(parts) == 4 and parts[:2] == ["dtd", "images"]
                    and posixpath.splitext(parts[3])[1].lower() == ".jpg"):
                jpgs.append((m, parts[2], posixpath.splitext(parts[3])[0]))
        cats = sorted({c for _, c, _ in jpgs})[:10]
        chosen = [(m, c, stem) for m, c, stem in jpgs if c in cats]
        bar.reset(total=len(chosen))
        for c in cats:
            (out / c).mkdir()
        for m, c, stem in chosen:
            dest = out / c / f"{stem}.png"
            if dest.exists():
                raise DataMissingError(f"dtd10: {archive} holds two images named {c}/{stem}; is it the right file?")
            with tar.extractfile(m) as f, Image.open(f) as im:
                _save_png(_shorter_side_crop(im.convert("RGB")), dest)
            bar.update(1)
    return len(chosen), []


def _derive_tinyimagenet32(archive: Path, out: Path, bar) -> tuple[int, list[str]]:
    """tiny-imagenet-200/train/<wnid>/images/<name>.JPEG -> out/train/<wnid>/<name>.png (32x32); wnids.txt and
    words.txt copied to out/."""
    import zipfile

    from PIL import Image

    with zipfile.ZipFile(archive) as zf:
        chosen, copied = [], []
        for zi in zf.infolist():
            parts = None if zi.is_dir() else _member_parts(zi.filename)
            if (parts and len(parts) == 5 and parts[:2] == ["tiny-imagenet-200", "train"] and parts[3] == "images"
                    and posixpath.splitext(parts[4])[1].lower() == ".jpeg"):
                chosen.append((zi, parts[2], posixpath.splitext(parts[4])[0]))
        bar.reset(total=len(chosen))
        for zi, wnid, stem in chosen:
            d = out / "train" / wnid
            d.mkdir(parents=True, exist_ok=True)
            dest = d / f"{stem}.png"
            if dest.exists():
                raise DataMissingError(f"tinyimagenet32: {archive} holds two training images named {wnid}/{stem}; "
                                       "is it the right file?")
            with zf.open(zi) as f, Image.open(f) as im:
                _save_png(im.convert("RGB").resize((32, 32), _bilinear()), dest)
            bar.update(1)
        for txt in ("wnids.txt", "words.txt"):
            if f"tiny-imagenet-200/{txt}" in zf.namelist():
                (out / txt).write_bytes(zf.read(f"tiny-imagenet-200/{txt}"))
                copied.append(txt)
    return len(chosen), copied


_DERIVERS = {"dtd10": _derive_dtd10, "tinyimagenet32": _derive_tinyimagenet32}


def derive_set(name: str, archive: Path, dest: Path) -> Path:
    """Derive the set ``name`` (``dtd10``, ``tinyimagenet32``) from its official ``archive`` (already checked
    against the registry checksum) into the folder ``dest``, by the transform its registry entry states
    (``derivation``; ``describe(name, full=True)``).

    Atomic: everything is written into a temporary folder ``.<dest>.derive-*`` beside ``dest`` and renamed to ``dest``
    only when complete, so an interrupted derivation leaves no folder that is taken for the set (a crash can leave
    only the hidden temporary one, which no reader looks at). Deterministic: the same archive gives byte-identical
    files (PNG with Pillow's defaults, no time stamps), and ``dest/DERIVED.json`` records the source archive, its
    checksum, the transform, the Pillow, libjpeg(-turbo) and zlib versions and the image count. ``dest`` must be
    absent or empty."""
    import PIL
    from PIL import features
    from tqdm.auto import tqdm

    info = dataset_info(name)
    if name not in _DERIVERS:
        raise ValueError(f"dataset {name!r} is not derived; allowed: {', '.join(_DERIVERS)}")
    official = info.files[1]
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    if dest.exists():
        raise DataMissingError(f"{name}: {dest} exists but holds no complete set; move it away (or delete it) and "
                               f"run again to derive it from {archive}.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.derive-", dir=dest.parent))
    print(f"{name}: deriving {dest} from {archive} (the transform: describe({name!r}, full=True))", file=sys.stderr)
    try:
        os.chmod(tmp, 0o755)
        with tqdm(unit="img", desc=f"{name} <- {archive.name}", file=sys.stderr, leave=False, mininterval=0.5) as bar:
            count, copied = _DERIVERS[name](archive, tmp, bar)
        if count == 0:
            raise DataMissingError(f"{name}: {archive} holds none of the images the derivation reads ("
                                   f"{info.derivation.split(';')[0]}); is it the right file?")
        manifest = {"set": name, "source": {"file": Path(official.path).name, "url": official.url,
                                            "checksum": official.checksum, "checksum_source": official.source},
                    "transform": info.derivation, "count": count, "copied": copied, "pillow": PIL.__version__,
                    "libjpeg": features.version("jpg"), "libjpeg_turbo": features.version("libjpeg_turbo"),
                    "zlib": features.version("zlib")}
        (tmp / DERIVED_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / DERIVED_MANIFEST).is_file():   # another process derived it meanwhile: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
