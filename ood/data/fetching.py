"""Where data live and how files get there: data roots, checksums, missing-file errors, downloads, archives.

Missing data fail at once with one ``DataMissingError`` line (which file, from where, where to put it, its
checksum); a corrupt or truncated file fails its checksum with a ``ChecksumError`` and is not used. With
``download=True`` the real download code runs (torchvision's, with its md5 check). Checksums are those
published in torchvision's source or in the OOD codebases named in each entry; where none could be
confirmed the entry says ``unverified`` and only existence and readability are checked.

The data root is ``$OOD_DATA_ROOT`` or ``<repo>/data`` (git-ignored). ``SHARED_DATA`` is the folder
``<repo>/../shared/data`` that may sit beside the checkout (official CIFAR files and a TinyImageNet-32 stand-in).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ood.data.registry import DatasetInfo, FileInfo


def _checkout() -> Path:
    """The checkout holding this package (``ood.config.repo_root`` from the package's folder, so not the test
    suite's pipeline copy that ``OOD_ROOT`` names); the working directory for an install without a checkout."""
    from ood.config import repo_root

    try:
        return repo_root(Path(__file__).resolve().parent)
    except FileNotFoundError:
        return Path.cwd()


DATA_ROOT: Path = Path(os.environ.get("OOD_DATA_ROOT") or _checkout() / "data")
SHARED_DATA: Path = _checkout().parent / "shared" / "data"


def data_root(root=None) -> Path:
    """``root`` as a path, or ``DATA_ROOT`` (read when called) when None."""
    return Path(root) if root is not None else DATA_ROOT


class DataMissingError(FileNotFoundError):
    """A dataset file is not under the data root; the one-line message says which, from where, where, checksum."""


class ChecksumError(ValueError):
    """A file is corrupt or truncated (checksum mismatch, undecodable); it was not used. The message says what to do."""


def file_checksum(path: str | Path, algo: str = "md5") -> str:
    """Hex digest (``md5`` or ``sha256``) of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, fi: FileInfo) -> None:
    """Raise ChecksumError if ``path`` does not match ``fi.checksum``; unverified entries: must be readable."""
    if fi.checksum is None:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            raise ChecksumError(f"{path} cannot be read ({e}); it was not used. Replace it with a fresh copy from "
                                f"{fi.url}") from None
        return
    algo, want = fi.checksum.split(":", 1)
    got = file_checksum(path, algo)
    if got != want:
        raise ChecksumError(f"{path} has {algo} {got}, expected {want} ({fi.source}): the file is corrupt or truncated "
                            f"and was not used. Delete it and download it again from {fi.url or 'its source'}"
                            f"{_shared_hint(fi)}.")


def _shared_hint(fi: FileInfo) -> str:
    name = Path(fi.path).name
    if (SHARED_DATA / fi.path).with_name(name + ".xz").is_file() or (SHARED_DATA / fi.path).is_file():
        return f" (an offline copy is in {SHARED_DATA})"
    return ""


def missing_error(name: str, path: Path, fi: FileInfo, root: Path, more: str = "", extra: str = "") -> DataMissingError:
    """The one-line error for a missing ``path``: where ``fi`` comes from, its checksum and where to put it."""
    how = f"download {fi.url}" if fi.url and fi.url.startswith("http") else f"get it from {fi.url or fi.source}"
    where = (f"put it at {root / fi.path} (it is extracted into {root / fi.extract_to if fi.extract_to else root})"
             if fi.extract_to is not None else f"put it at {root / fi.path}")
    dl = (f", or call load({name!r}, download=True) where the network is reachable"
          if fi.url and fi.url.startswith("http") else "")
    return DataMissingError(f"{name}: missing {path}{more}; {how} ({fi.checksum or 'checksum unverified'}) and {where}"
                            f"{dl}{extra}.")


def download_file(name: str, fi: FileInfo, root: Path) -> Path:
    """Download ``fi`` to ``root/fi.path`` with torchvision's downloader (md5-checked); failures -> DataMissingError."""
    from torchvision.datasets.utils import download_url

    dest = root / fi.path
    md5 = fi.checksum.split(":", 1)[1] if fi.checksum and fi.checksum.startswith("md5:") else None
    try:
        download_url(fi.url, str(dest.parent), dest.name, md5=md5)
    except Exception as e:  # network errors come in many types (URLError, HTTPError, OSError, RuntimeError)
        raise DataMissingError(f"{name}: download of {fi.url} to {dest} failed ({type(e).__name__}: {e}); download it "
                               f"by hand ({fi.checksum or 'checksum unverified'}) and put it at {dest}.") from None
    if not dest.is_file():
        raise DataMissingError(f"{name}: download of {fi.url} did not produce {dest}; download it by hand "
                               f"({fi.checksum or 'checksum unverified'}) and put it there.")
    return dest


def extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` through a temporary folder, so a crash leaves no half-extracted set."""
    from torchvision.datasets.utils import extract_archive

    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        extract_archive(str(archive), str(tmp))
        for item in tmp.iterdir():
            target = dest / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_save(path: Path, write) -> None:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def files_under(info: DatasetInfo, prefix: str) -> list[FileInfo]:
    """The files of ``info`` whose path starts with ``prefix``."""
    return [f for f in info.files if f.path.startswith(prefix)]


def require(info: DatasetInfo, root: Path, needed: list[FileInfo], extra: str = "") -> None:
    """Extract the set's archive if it is under the root and files are missing (after its checksum); then
    DataMissingError naming the first missing file of ``needed`` and the archive that holds it."""
    missing = [f for f in needed if not (root / f.path).is_file()]
    archive = info.files[0]
    if missing and all((SHARED_DATA / (f.path + ".xz")).is_file() for f in missing):
        for f in missing:
            _unpack_shared(f, root)
        missing = []
    if missing and archive.extract_to is not None and (root / archive.path).is_file():
        verify(root / archive.path, archive)
        extract(root / archive.path, root / archive.extract_to)
        missing = [f for f in needed if not (root / f.path).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of its {len(needed)} files)" if len(missing) > 1 else ""
        hint = (f"; offline: {SHARED_DATA}/unpack {root} writes the official CIFAR files"
                if (SHARED_DATA / "unpack").is_file() and info.name.startswith("cifar") else "")
        raise missing_error(info.name, root / missing[0].path, archive, root, more, extra + hint)


def _unpack_shared(fi: FileInfo, root: Path) -> None:
    """Decompress the official file ``fi`` from its ``.xz`` copy in ``SHARED_DATA`` to ``root/fi.path`` (checked
    against ``fi.checksum`` before it is moved into place: a corrupt copy leaves nothing behind)."""
    import lzma

    dest = root / fi.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, lzma.open(SHARED_DATA / (fi.path + ".xz")) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        verify(Path(tmp), fi)
        os.replace(tmp, dest)
    except lzma.LZMAError as e:
        raise ChecksumError(f"{SHARED_DATA / (fi.path + '.xz')} cannot be decompressed ({e}); it was not used. "
                            f"Replace it, or download {fi.url or fi.source} by hand.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def first_corrupt(root: Path, files: list[FileInfo]) -> None:
    """ChecksumError for the first of ``files`` under ``root`` that fails its checksum (``verify``)."""
    for f in files:
        verify(root / f.path, f)


def archive_candidates(info: DatasetInfo, root: Path) -> list[Path]:
    """Where the archive of an image-folder set may be: under ``root``, and in ``SHARED_DATA`` for a set with no URL."""
    fi = info.files[0]
    cands = [root / fi.path]
    if fi.url is None:  # kept beside the project only (tinyimagenet32, dtd10): the copy in ../shared/data
        cands.append(SHARED_DATA / Path(fi.path).name)
    return cands
