"""Where data live and how files get there: data roots, checksums, missing-file errors, downloads, mirrors, archives.

Missing data fail at once with one ``DataMissingError`` line (which file, from where, where to put it, its
checksum); a corrupt or truncated file fails its checksum with a ``ChecksumError`` and is not used. Checksums are
those published in torchvision's source or in the OOD codebases named in each entry; where none could be confirmed
the entry says ``unverified`` and only existence and readability are checked.

Mirrors (``registry.mirror_list``: ``$OOD_MIRRORS``, entries separated by ``;``, or ``mirrors=[...]``): a file is
looked up at each mirror as ``<mirror>/<file name>`` (an ``http(s)://`` base URL or a local folder), in order, before
its official URL; ``fetch`` / ``download_file`` (``download=True``) then fall back to the official URL, ``require``
(no download asked) to nothing. Every file is streamed (urllib, a tqdm bar on stderr, a socket timeout of
``$OOD_DOWNLOAD_TIMEOUT`` s, default 30) into a temporary file beside its target, checked against the registry
checksum and only then renamed into place: a failed, truncated or wrong download leaves nothing behind. A source that
does not have the file (404, timeout, truncated body, no such file) is skipped, and the final ``DataMissingError``
names every source tried and why; a source that serves a complete file with the wrong checksum stops the lookup with
a ``ChecksumError`` naming it. ``extract`` refuses archive members that would land outside the target folder.

The data root is ``$OOD_DATA_ROOT`` or ``<repo>/data`` (git-ignored). ``SHARED_DATA`` is the folder
``<repo>/../shared/data`` that may sit beside the checkout (official CIFAR files; an offline mirror of our derived
copies of TinyImageNet-32 and DTD-10, which otherwise derive from their official archives, ``derive.derive_set``).
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import posixpath
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ood.data.registry import MIRRORS_ENV, DatasetInfo, FileInfo, mirror_list


def _checkout() -> Path:
    """The checkout holding this package (``ood.config.repo_root`` from the package's folder, so not the test
    suite's pipeline copy that ``OOD_ROOT`` names); the working directory for an install without a checkout. An
    experiment queued with ``dvc exp run --queue`` runs in a temporary copy of the checkout under
    ``<checkout>/.dvc/tmp/exps/``: its data root and ``../shared/data`` are the checkout's
    (``ood.config.outside_dvc_temp``)."""
    from ood.config import outside_dvc_temp, repo_root

    try:
        return outside_dvc_temp(repo_root(Path(__file__).resolve().parent))
    except FileNotFoundError:
        return outside_dvc_temp(Path.cwd())


DATA_ROOT: Path = Path(os.environ.get("OOD_DATA_ROOT") or _checkout() / "data")
SHARED_DATA: Path = _checkout().parent / "shared" / "data"


def data_root(root=None) -> Path:
    """``root`` as a path, or ``DATA_ROOT`` (read when called) when None."""
    return Path(root) if root is not None else DATA_ROOT


_LOCK_DEPTH: dict[str, int] = {}


@contextlib.contextmanager
def data_lock(root: Path):
    """Hold the lock of data root ``root`` (an exclusive ``fcntl.flock`` on ``<tmp>/ood-data-<hash of the root's
    path>.lock``, outside the root, so that nothing but data lands there; re-entrant within a process) while a set
    is prepared and read, so that two processes on one root (the seed workers of a stage, or a queued DVC experiment
    beside the workspace) never list a folder that the other is extracting. Without ``fcntl`` (Windows) it does
    nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    key = str(Path(root).resolve())
    if _LOCK_DEPTH.get(key):
        _LOCK_DEPTH[key] += 1
        try:
            yield
        finally:
            _LOCK_DEPTH[key] -= 1
        return
    lock = Path(tempfile.gettempdir()) / f"ood-data-{hashlib.sha1(key.encode()).hexdigest()[:16]}.lock"
    try:
        f = open(lock, "a")
    except OSError:   # pragma: no cover - no writable temporary folder: nothing to guard with
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _LOCK_DEPTH[key] = 1
        try:
            yield
        finally:
            _LOCK_DEPTH[key] = 0
            fcntl.flock(f, fcntl.LOCK_UN)


class DataMissingError(FileNotFoundError):
    """A dataset file is not under the data root; the one-line message says which, from where, where, checksum."""


class ChecksumError(ValueError):
    """A file is corrupt or truncated (checksum mismatch, undecodable); it was not used. The message says what to do."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder (``../``, absolute path, link pointing out, device
    file); nothing of the archive was extracted. The message names the member."""


#: Environment variable: socket timeout in seconds of every download (mirrors and official URLs).
TIMEOUT_ENV = "OOD_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
_USER_AGENT = "ood-companion (python urllib)"


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


def missing_error(name: str, path: Path, fi: FileInfo, root: Path, more: str = "", extra: str = "", *,
                  tried: list[tuple[str, str]] | None = None) -> DataMissingError:
    """The one-line error for a missing ``path``: where ``fi`` comes from, its checksum and where to put it; the
    mirrors ``tried`` (location, why not) or, when None and mirrors are configured, that they were not looked up."""
    how = f"download {fi.url}" if fi.url and fi.url.startswith("http") else f"get it from {fi.url or fi.source}"
    where = (f"put it at {root / fi.path} (it is extracted into {root / fi.extract_to if fi.extract_to else root})"
             if fi.extract_to is not None else f"put it at {root / fi.path}")
    dl = (f", or call load({name!r}, download=True) where the network is reachable"
          if fi.url and fi.url.startswith("http") else "")
    if tried:
        extra += "; not at the mirrors tried: " + _tried_text(tried)
    elif tried is None and (ms := mirror_list()):
        extra += (f"; the mirrors in ${MIRRORS_ENV} ({', '.join(ms)}) are not looked up for this set here: copy "
                  f"<mirror>/{Path(fi.path).name} there by hand")
    return DataMissingError(f"{name}: missing {path}{more}; {how} ({fi.checksum or 'checksum unverified'}) and {where}"
                            f"{dl}{extra}.")


def _tried_text(tried: list[tuple[str, str]]) -> str:
    return ", ".join(f"{where} ({why})" for where, why in tried)


def download_timeout() -> float:
    """The socket timeout of downloads: ``$OOD_DOWNLOAD_TIMEOUT`` seconds (read when called), default 30."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        t = float(raw)
    except ValueError:
        t = -1.0
    if not t > 0:
        raise ValueError(f"${TIMEOUT_ENV}={raw!r} must be a number of seconds > 0")
    return t


class _Unavailable(Exception):
    """A source does not have the file (HTTP error, timeout, truncated body, no such file): try the next one."""


def mirror_location(mirror: str, filename: str) -> str:
    """Where ``filename`` is looked up at ``mirror``: ``<base URL>/<quoted name>`` or ``<folder>/<name>``."""
    if mirror.lower().startswith(("http://", "https://")):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)
    if mirror.lower().startswith("file://"):
        mirror = urllib.request.url2pathname(urllib.parse.urlparse(mirror).path)
    return str(Path(mirror).expanduser() / filename)


def _why(e: BaseException, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError) and not isinstance(e.reason, str):
        e = e.reason
    if isinstance(e, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}"


def _stream(src, out, total: int | None, hasher, desc: str, timeout: float) -> int:
    """Copy ``src`` to ``out`` in 1 MiB chunks (hashing them, a tqdm bar on stderr); read errors -> _Unavailable."""
    from tqdm.auto import tqdm

    got = 0
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr,
              leave=False, mininterval=0.5) as bar:
        while True:
            try:
                chunk = src.read(1 << 20)
            except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                raise _Unavailable(f"{_why(e, timeout)} after {got:,} bytes") from None
            if not chunk:
                return got
            out.write(chunk)           # local write errors (disk full) propagate as they are
            hasher.update(chunk)
            got += len(chunk)
            bar.update(len(chunk))


def _copy_from(location: str, out, hasher, desc: str, timeout: float) -> None:
    """Copy the file at ``location`` (http(s) URL or local path) into ``out``; _Unavailable if it cannot be had."""
    if location.lower().startswith(("http://", "https://")):
        req = urllib.request.Request(location, headers={"User-Agent": _USER_AGENT})
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()
            raise _Unavailable(_why(e, timeout)) from None
        with resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            got = _stream(resp, out, total, hasher, desc, timeout)
        if total is not None and got != total:
            raise _Unavailable(f"truncated: {got:,} of {total:,} bytes")
        return
    path = Path(location)
    if not path.parent.is_dir():
        raise _Unavailable("no such folder")
    if not path.is_file():
        raise _Unavailable("no such file")
    try:
        with open(path, "rb") as src:
            _stream(src, out, path.stat().st_size, hasher, desc, timeout)
    except OSError as e:                 # opening failed (permissions)
        raise _Unavailable(f"{type(e).__name__}: {e}") from None


def _fetch_one(name: str, fi: FileInfo, dest: Path, location: str, label: str, timeout: float) -> None:
    """Stream ``location`` into a temporary file beside ``dest``, check ``fi.checksum``, rename it to ``dest``.
    Whatever fails, the temporary file is removed. _Unavailable: not there; ChecksumError: the wrong file."""
    algo, want = fi.checksum.split(":", 1) if fi.checksum else ("md5", None)
    hasher = hashlib.new(algo)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_from(location, out, hasher, f"{dest.name} <- {label}", timeout)
        got = hasher.hexdigest()
        if want is not None and got != want:
            fix = ("replace or remove the file at that mirror, or drop the mirror" if label.startswith("mirror")
                   else "try again later or download it by hand")
            raise ChecksumError(f"{name}: {label} served {location} with {algo} {got}, expected {want} ({fi.source}): "
                                f"the wrong or a corrupt file; it was not used and nothing was written to {dest}: "
                                f"{fix}.")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch(name: str, fi: FileInfo, dest: Path, sources: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Try ``sources`` ((label, location) pairs) in order until one serves ``fi``; the failures [(location, why)]
    when none did (then ``dest`` and any folder made for it are gone). ChecksumError stops at the first wrong file."""
    timeout = download_timeout()
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[str, str]] = []
    try:
        for i, (label, location) in enumerate(sources):
            try:
                _fetch_one(name, fi, dest, location, label, timeout)
                return []
            except _Unavailable as e:
                failed.append((location, str(e)))
                nxt = f"; trying {sources[i + 1][1]}" if i + 1 < len(sources) else ""
                print(f"{name}: {location}: {e}{nxt}", file=sys.stderr)
    except BaseException:
        _remove_empty(made)
        raise
    _remove_empty(made)
    return failed


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:                      # deepest first
        try:
            d.rmdir()
        except OSError:
            pass


def _sources(fi: FileInfo, ms: list[str], official: bool) -> list[tuple[str, str]]:
    """(label, location) of ``fi`` at each mirror, in order, then its official URL when ``official`` and http(s)."""
    fname = Path(fi.path).name
    sources = [(f"mirror {m}", mirror_location(m, fname)) for m in ms]
    if official and fi.url and fi.url.lower().startswith(("http://", "https://")):
        sources.append(("its URL", fi.url))
    return sources


def fetch(name: str, fi: FileInfo, root: Path, mirrors=None, *, official: bool = True) -> Path:
    """``root/fi.path``, fetched if absent (or failing its checksum): at each mirror (``mirror_list(mirrors)``) as
    ``<mirror>/<file name>``, in order, then (``official``) at ``fi.url``. A source without the file is skipped;
    none left: one-line DataMissingError naming every source tried. A wrong file: ChecksumError naming its source."""
    dest = root / fi.path
    if dest.is_file():
        try:
            verify(dest, fi)
            return dest
        except ChecksumError:
            pass                           # fetched again below; replaced only by a file that passes
    ms = mirror_list(mirrors)
    fname = Path(fi.path).name
    sources = _sources(fi, ms, official)
    has_url = len(sources) > len(ms)
    if not sources:
        raise missing_error(name, dest, fi, root, tried=[])
    failed = _fetch(name, fi, dest, sources)
    if not failed:
        return dest
    hand = f"download it by hand ({fi.checksum or 'checksum unverified'}) and put it at {dest}"
    at_mirrors = _tried_text(failed[:len(ms)])
    if has_url:
        why = failed[-1][1]
        head = (f"{name}: {fname} not at the mirrors tried ({at_mirrors}) and download of {fi.url} failed ({why})"
                if ms else f"{name}: download of {fi.url} to {dest} failed ({why})")
        raise DataMissingError(f"{head}; {hand}.")
    src = fi.url or fi.source
    raise DataMissingError(f"{name}: {fname} not at the mirrors tried ({at_mirrors}); get it from {src} "
                           f"({fi.checksum or 'checksum unverified'}) and put it at {dest}.")


def from_mirrors(name: str, fi: FileInfo, root: Path, download: bool) -> Path | None:
    """``root/fi.path`` fetched from the configured mirrors (``mirror_list()``), for a reader whose file is absent:
    None when no mirror is configured, or when none has it and ``download`` lets the reader try its official URL;
    otherwise the one-line DataMissingError naming the mirrors tried (a wrong file: ChecksumError naming it)."""
    if not mirror_list():
        return None
    try:
        return fetch(name, fi, root, official=False)
    except DataMissingError:
        if download:
            return None
        raise


def try_fetch(name: str, fi: FileInfo, root: Path, mirrors=None, *, official: bool) -> tuple[Path | None, list]:
    """``root/fi.path`` when it is there (checked: a corrupt file is a ChecksumError), else fetched from the mirrors
    (``mirror_list(mirrors)``) and, with ``official``, its official URL: ``(path, [])``, or ``(None, tried)`` with
    the (location, why not) of every source tried when none had it (nothing is left behind). A source serving the
    wrong file: ChecksumError naming it. For readers that fall back to another source (the derived sets)."""
    dest = root / fi.path
    if dest.is_file():
        verify(dest, fi)
        return dest, []
    sources = _sources(fi, mirror_list(mirrors), official)
    if not sources:
        return None, []
    failed = _fetch(name, fi, dest, sources)
    return (None, failed) if failed else (dest, [])


def tried_text(tried: list[tuple[str, str]]) -> str:
    """``location (why not), ...`` of the sources ``tried``."""
    return _tried_text(tried)


def download_file(name: str, fi: FileInfo, root: Path, mirrors=None) -> Path:
    """Download ``fi`` to ``root/fi.path``: the mirrors first, then its official URL (``fetch``); checksum-checked,
    atomic; failures -> DataMissingError naming every source tried, a wrong file -> ChecksumError."""
    return fetch(name, fi, root, mirrors, official=True)


def _outside(name: str) -> bool:
    """Whether archive path ``name`` (``/``-separated, relative to the target folder) leaves it."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    norm = posixpath.normpath(name)
    return norm == ".." or norm.startswith("../")


def _checked_tar(tar: tarfile.TarFile, archive: Path):
    """The members of ``tar``, each checked before it is extracted (UnsafeArchiveError names the first bad one)."""
    for m in tar:
        what = None
        if _outside(m.name):
            what = "its path leaves the target folder"
        elif m.issym() and (m.linkname.startswith("/") or _outside(posixpath.join(posixpath.dirname(m.name),
                                                                                    m.linkname))):
            what = f"it is a symlink to {m.linkname!r}, outside the target folder"
        elif m.islnk() and _outside(m.linkname):
            what = f"it is a hard link to {m.linkname!r}, outside the target folder"
        elif m.isdev():
            what = "it is a device file or FIFO"
        if what:
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} refused: {what}; nothing of the archive was "
                                     "extracted (is it the right file?).")
        yield m


def _extract_zip(archive: Path, tmp: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for zi in zf.infolist():
            what = None
            if _outside(zi.filename):
                what = "its path leaves the target folder"
            elif stat.S_ISLNK(zi.external_attr >> 16):
                what = "it is a symlink (links in zip archives are not extracted)"
            if what:
                raise UnsafeArchiveError(f"{archive}: member {zi.filename!r} refused: {what}; nothing of the archive "
                                         "was extracted (is it the right file?).")
        zf.extractall(tmp)


def extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` through a temporary folder, so a crash leaves no half-extracted set.

    Tar (any compression) and zip: a member whose path is absolute or climbs out with ``..``, a symlink or hard link
    pointing outside ``dest``, a device file or FIFO, or (zip) any symlink is refused with UnsafeArchiveError naming
    it, and nothing is extracted; links inside ``dest`` are kept (tar's ``data`` filter checks them again on disk).
    Other formats (a single ``.gz``/``.xz``/``.bz2`` file): torchvision's ``extract_archive``."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        if archive.suffix.lower() == ".zip":
            _extract_zip(archive, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                try:
                    tar.extractall(tmp, members=_checked_tar(tar, archive), filter="data")
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(f"{archive}: member {e.tarinfo.name!r} refused ({e}); nothing of the "
                                             "archive was extracted (is it the right file?).") from None
        else:
            from torchvision.datasets.utils import extract_archive

            extract_archive(str(archive), str(tmp))
        for item in tmp.iterdir():
            target = dest / item.name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
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


def require(info: DatasetInfo, root: Path, needed: list[FileInfo], extra: str = "", mirrors=None) -> None:
    """Extract the set's archive if it is under the root and files are missing (after its checksum), fetching it
    first from the mirrors (``mirror_list(mirrors)``, not its official URL) when it is not; then DataMissingError
    naming the first missing file of ``needed``, the archive that holds it and the mirrors tried."""
    missing = [f for f in needed if not (root / f.path).is_file()]
    archive = info.files[0]
    if missing and all((SHARED_DATA / (f.path + ".xz")).is_file() for f in missing):
        for f in missing:
            _unpack_shared(f, root)
        missing = []
    tried, ms = None, mirror_list(mirrors)
    if missing and archive.extract_to is not None and not (root / archive.path).is_file() and ms:
        tried = _fetch(info.name, archive, root / archive.path, _sources(archive, ms, official=False))
    if missing and archive.extract_to is not None and (root / archive.path).is_file():
        verify(root / archive.path, archive)
        extract(root / archive.path, root / archive.extract_to)
        missing = [f for f in needed if not (root / f.path).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of its {len(needed)} files)" if len(missing) > 1 else ""
        hint = (f"; offline: {SHARED_DATA}/unpack {root} writes the official CIFAR files"
                if (SHARED_DATA / "unpack").is_file() and info.name.startswith("cifar") else "")
        raise missing_error(info.name, root / missing[0].path, archive, root, more, extra + hint, tried=tried)


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


def archive_candidates(info: DatasetInfo, root: Path) -> list[Path]:
    """Where the archive of an image-folder set may be: under ``root``, and in ``SHARED_DATA`` for a set with no URL."""
    fi = info.files[0]
    cands = [root / fi.path]
    if fi.url is None:  # our derived copies (tinyimagenet32, dtd10): the offline mirror in ../shared/data
        cands.append(SHARED_DATA / Path(fi.path).name)
    return cands
