"""Dataset mirrors and downloads that cannot pass silently (issue 27): lookup order, checksums, clean failures, tar/zip.

Every download here goes to a loopback HTTP server the test starts itself (``127.0.0.1``, port 0, in a thread, a
request budget) or to a local folder; official URLs of the toy registry entries point at that server too, so nothing
leaves the machine. The official registry entries and their checksums are not touched: toy ``DatasetInfo`` entries
are put into ``DATASETS`` with ``monkeypatch.setitem`` and removed after each test.
"""
from __future__ import annotations

import hashlib
import io
import signal
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from loopback import folder_handler, serving
from ood.data import fetching, registry

PAYLOAD = bytes(range(256)) * 64                 # 16 KiB of toy "dataset"
FNAME = "toy.bin"
TIME_LIMIT_S = 20                                # per test (SIGALRM); the slowest test takes about a second
MAX_REQUESTS = 40                                # per test; a loop of retries would hit it
TIMEOUT_S = 0.3                                  # $OOD_DOWNLOAD_TIMEOUT in these tests


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def make_handler(state):
    """The request handler (tests/loopback.py): serves ``state["folder"]``; ``/slow/...`` waits past the client's
    timeout, ``/trunc/<file>`` announces the whole file but sends half of it and closes. Every request path is logged
    in ``state["log"]``."""

    def special(h) -> bool:
        if h.path.startswith("/slow/"):
            state["release"].wait(5 * TIMEOUT_S + 2)    # past the client's timeout; released at teardown
            h.send_error(404)
            return True
        if h.path.startswith("/trunc/"):
            body = (state["folder"] / h.path[len("/trunc/"):]).read_bytes()
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return True
        return False

    return folder_handler(state, MAX_REQUESTS, special)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A loopback HTTP server on 127.0.0.1 (port 0) serving ``tmp_path/www``; shut down by the finalizer. Also: no
    proxies, no mirrors from the caller's environment, a short download timeout, no shared data, a per-test alarm."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                registry.MIRRORS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv(fetching.TIMEOUT_ENV, str(TIMEOUT_S))
    monkeypatch.setattr(fetching, "SHARED_DATA", tmp_path / "no-shared")
    state = {"folder": tmp_path / "www", "log": [], "release": threading.Event()}
    state["folder"].mkdir()

    def alarm(*_):
        pytest.fail(f"test ran past its {TIME_LIMIT_S} s limit")

    with serving(make_handler(state)) as url:
        old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(TIME_LIMIT_S)
        state["url"] = url
        try:
            yield state
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            state["release"].set()   # before the server shuts down: a /slow/ request waits on it


def toy(monkeypatch, official: str | None, payload: bytes = PAYLOAD, path: str = f"toy/{FNAME}",
        extract_to: str | None = None, name: str = "toy-set") -> registry.DatasetInfo:
    """A toy registry entry with the checksum of ``payload`` and ``official`` as its URL, put into DATASETS."""
    fi = registry.FileInfo(path, official, f"md5:{md5(payload)}", "a toy entry of the tests", extract_to=extract_to)
    info = registry.DatasetInfo(name=name, kind="ood", title="Toy set", splits=None, files=(fi,),
                                preprocessing="none", citation="none")
    monkeypatch.setitem(registry.DATASETS, name, info)
    return info


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# ---------------------------------------------------------------------------------------------- lookup order

def test_file_found_at_first_http_mirror_before_the_official_url(server, monkeypatch, tmp_path):
    (server["folder"] / "m1").mkdir()
    (server["folder"] / "m1" / FNAME).write_bytes(PAYLOAD)
    (server["folder"] / "official.bin").write_bytes(PAYLOAD)
    info = toy(monkeypatch, server["url"] + "/official.bin")
    root = tmp_path / "root"
    out = fetching.download_file("toy-set", info.files[0], root, mirrors=[server["url"] + "/m1/"])
    assert out == root / "toy" / FNAME and out.read_bytes() == PAYLOAD
    assert server["log"] == [f"/m1/{FNAME}"]                     # the mirror, by file name; the official URL untouched
    assert files_under(root) == ["toy", f"toy/{FNAME}"]           # no temporary file left beside it


def test_file_found_at_a_folder_mirror_named_in_the_environment(server, monkeypatch, tmp_path):
    folder = tmp_path / "mirror dir"                              # ';' separates entries: a space is part of a path
    folder.mkdir()
    (folder / FNAME).write_bytes(PAYLOAD)
    info = toy(monkeypatch, server["url"] + "/official.bin")
    monkeypatch.setenv(registry.MIRRORS_ENV, f" {server['url']}/empty ; {folder} ")
    assert registry.mirror_list() == [f"{server['url']}/empty", str(folder)]
    root = tmp_path / "root"
    out = fetching.download_file("toy-set", info.files[0], root)
    assert out.read_bytes() == PAYLOAD
    assert server["log"] == [f"/empty/{FNAME}"]                  # the first mirror (404), then the folder; no URL


def test_mirror_entries_other_than_http_or_folders_are_refused():
    with pytest.raises(ValueError, match=r"'ftp://x/y'.*http\(s\):// base URL or a local folder"):
        registry.mirror_list(["https://ok/", "ftp://x/y"])
    assert registry.mirror_list("a; b ;;c") == ["a", "b", "c"] and registry.mirror_list([]) == []


# ---------------------------------------------------------------------------------------------- wrong and partial files

def test_tampered_file_at_a_mirror_is_a_checksum_error_naming_it(server, monkeypatch, tmp_path):
    bad = bytearray(PAYLOAD)
    bad[1000] ^= 1                                                # one byte changed
    (server["folder"] / FNAME).write_bytes(bytes(bad))
    (server["folder"] / "official.bin").write_bytes(PAYLOAD)
    info = toy(monkeypatch, server["url"] + "/official.bin")
    root = tmp_path / "root"
    with pytest.raises(fetching.ChecksumError) as e:
        fetching.download_file("toy-set", info.files[0], root, mirrors=[server["url"]])
    msg = str(e.value)
    assert f"mirror {server['url']}" in msg and f"{server['url']}/{FNAME}" in msg
    assert f"md5 {md5(bytes(bad))}, expected {md5(PAYLOAD)}" in msg and "\n" not in msg
    assert not root.exists()                                      # nothing left, not even the folders made for it
    assert server["log"] == [f"/{FNAME}"]                         # a wrong file stops the lookup: it is not skipped
    folder = tmp_path / "fmirror"                                 # the same from a folder mirror
    folder.mkdir()
    (folder / FNAME).write_bytes(bytes(bad))
    with pytest.raises(fetching.ChecksumError, match=f"mirror {folder} served {folder / FNAME} with md5"):
        fetching.download_file("toy-set", info.files[0], root, mirrors=[str(folder)])
    assert not root.exists()


def test_truncated_download_leaves_nothing_and_the_next_run_starts_clean(server, monkeypatch, tmp_path):
    (server["folder"] / FNAME).write_bytes(PAYLOAD)
    info = toy(monkeypatch, None)                                 # no official URL: the mirrors are all there is
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(fetching.DataMissingError) as e:
        fetching.download_file("toy-set", info.files[0], root, mirrors=[server["url"] + "/trunc"])
    msg = str(e.value)
    assert f"{server['url']}/trunc/{FNAME} (truncated: {len(PAYLOAD) // 2:,} of {len(PAYLOAD):,} bytes)" in msg
    assert "\n" not in msg and files_under(root) == []            # no partial file, no .part file
    out = fetching.download_file("toy-set", info.files[0], root, mirrors=[server["url"]])
    assert out.read_bytes() == PAYLOAD and files_under(root) == ["toy", f"toy/{FNAME}"]


# ---------------------------------------------------------------------------------------------- falling through

def test_404_and_timeout_fall_through_to_the_official_url_then_fail_in_one_line(server, monkeypatch, tmp_path):
    (server["folder"] / "official.bin").write_bytes(PAYLOAD)
    info = toy(monkeypatch, server["url"] + "/official.bin")
    mirrors = [server["url"] + "/missing", server["url"] + "/slow"]
    root = tmp_path / "root"
    t0 = time.monotonic()
    out = fetching.download_file("toy-set", info.files[0], root, mirrors=mirrors)
    assert time.monotonic() - t0 < 5 * TIMEOUT_S + 1              # the timeout bounds the slow mirror
    assert out.read_bytes() == PAYLOAD
    assert server["log"] == [f"/missing/{FNAME}", f"/slow/{FNAME}", "/official.bin"]
    out.unlink()
    (server["folder"] / "official.bin").unlink()                  # nowhere left
    with pytest.raises(fetching.DataMissingError) as e:
        fetching.download_file("toy-set", info.files[0], root, mirrors=mirrors)
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, FileNotFoundError)
    assert f"{server['url']}/missing/{FNAME} (HTTP 404" in msg
    assert f"{server['url']}/slow/{FNAME} (timed out after {TIMEOUT_S:g} s" in msg
    assert f"download of {server['url']}/official.bin failed (HTTP 404" in msg and md5(PAYLOAD) in msg
    assert files_under(root) == ["toy"]                           # the folder was there before; nothing in it


def test_require_fetches_the_archive_from_a_mirror_only(server, monkeypatch, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ti = tarfile.TarInfo("toyset/a.bin")
        ti.size = len(PAYLOAD)
        tar.addfile(ti, io.BytesIO(PAYLOAD))
    archive = buf.getvalue()
    (server["folder"] / "official.tar.gz").write_bytes(archive)
    info = toy(monkeypatch, server["url"] + "/official.tar.gz", archive, path="toyset.tar.gz", extract_to="")
    needed = [registry.FileInfo("toyset/a.bin", None, f"md5:{md5(PAYLOAD)}")]
    root = tmp_path / "root"
    with pytest.raises(fetching.DataMissingError) as e:           # without download=True: no official URL
        fetching.require(info, root, needed, mirrors=[server["url"] + "/m"])
    msg = str(e.value)
    assert "\n" not in msg and f"not at the mirrors tried: {server['url']}/m/toyset.tar.gz (HTTP 404" in msg
    assert server["log"] == ["/m/toyset.tar.gz"] and not root.exists()
    (server["folder"] / "m").mkdir()
    (server["folder"] / "m" / "toyset.tar.gz").write_bytes(archive)
    monkeypatch.setenv(registry.MIRRORS_ENV, server["url"] + "/m")
    fetching.require(info, root, needed)
    assert (root / "toyset" / "a.bin").read_bytes() == PAYLOAD


def test_describe_and_the_missing_message_name_the_configured_mirrors(server, monkeypatch, tmp_path):
    info = toy(monkeypatch, "https://example.invalid/toy.bin")
    assert "mirror" not in registry.describe("toy-set", full=True)       # none configured: the entry as before
    monkeypatch.setenv(registry.MIRRORS_ENV, f"{server['url']}/a;{tmp_path}")
    text = registry.describe("toy-set", full=True)
    row = next(r for r in text.splitlines() if "mirrors" in r)
    assert row.endswith(f"{server['url']}/a, {tmp_path}") and "$OOD_MIRRORS" in row and "checksum" in row
    assert "mirror" not in registry.describe("toy-set")                   # the one-line form is unchanged
    assert "given" in registry.describe("toy-set", full=True, mirrors=["https://m/"])
    assert "mirrors" not in registry.describe("synthetic", full=True)     # nothing to fetch
    msg = str(fetching.missing_error("toy-set", tmp_path / FNAME, info.files[0], tmp_path))
    assert f"mirrors in $OOD_MIRRORS ({server['url']}/a, {tmp_path}) are not looked up" in msg


def test_download_timeout_must_be_positive(monkeypatch):
    monkeypatch.setenv(fetching.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="OOD_DOWNLOAD_TIMEOUT='soon'"):
        fetching.download_timeout()
    monkeypatch.delenv(fetching.TIMEOUT_ENV)
    assert fetching.download_timeout() == fetching.DEFAULT_TIMEOUT == 30


# ---------------------------------------------------------------------------------------------- archives

def _tar(path: Path, members) -> Path:
    with tarfile.open(path, "w") as tar:
        tar.addfile(tarfile.TarInfo("ok/first.txt"), io.BytesIO(b""))
        for name, kind, target in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = 3
                tar.addfile(ti, io.BytesIO(b"bad"))
            else:
                ti.type, ti.linkname = (tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE), target
                tar.addfile(ti)
    return path


@pytest.mark.parametrize("name,kind,target", [
    ("../x", "file", None), ("ok/../../x", "file", None), ("/abs/x", "file", None),
    ("link", "sym", "../outside"), ("link", "sym", "/etc/passwd"), ("ok/link", "sym", "../../outside"),
    ("hard", "hard", "../outside"),
    ("d", "sym", "ok"),                          # a symlink inside is kept; see the next case for a chain through it
])
def test_tar_members_escaping_the_target_are_refused(tmp_path, name, kind, target):
    dest = tmp_path / "out" / "dest"
    archive = _tar(tmp_path / "a.tar", [(name, kind, target)])
    if (name, target) == ("d", "ok"):
        fetching.extract(archive, dest)
        assert (dest / "d").is_symlink() and (dest / "ok" / "first.txt").is_file()
        return
    with pytest.raises(fetching.UnsafeArchiveError, match=f"member '{name}' refused") as e:
        fetching.extract(archive, dest)
    assert "\n" not in str(e.value)
    assert files_under(tmp_path / "out") == ["dest"]             # nothing extracted, not even the good member
    assert not (tmp_path / "x").exists() and not (tmp_path / "out" / "x").exists()


def test_tar_symlink_chain_out_is_refused_on_disk(tmp_path):
    """Each link looks inside on its own (``a/b -> ..`` is ``.``), but ``a/b/c -> ..`` resolves to the parent of the
    target: tar's data filter catches it on disk, and it still comes out as UnsafeArchiveError naming the member."""
    dest = tmp_path / "out" / "dest"
    archive = _tar(tmp_path / "a.tar", [("a/b", "sym", ".."), ("a/b/c", "sym", ".."), ("a/b/c/x", "file", None)])
    with pytest.raises(fetching.UnsafeArchiveError, match="member 'a/b/c"):
        fetching.extract(archive, dest)
    assert files_under(tmp_path / "out") == ["dest"] and not (tmp_path / "out" / "x").exists()


@pytest.mark.parametrize("name,link", [("../x", False), ("/abs/x", False), ("ok/../../x", False), ("ln", True)])
def test_zip_members_escaping_the_target_are_refused(tmp_path, name, link):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/first.txt", b"")
        zi = zipfile.ZipInfo(name)
        if link:
            zi.external_attr = (0o120777 << 16)
        zf.writestr(zi, b"../outside" if link else b"bad")
    dest = tmp_path / "out" / "dest"
    with pytest.raises(fetching.UnsafeArchiveError, match=f"member '{name}' refused"):
        fetching.extract(archive, dest)
    assert files_under(tmp_path / "out") == ["dest"]
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("ok/first.txt", b"fine")
    fetching.extract(good, dest)
    assert (dest / "ok" / "first.txt").read_bytes() == b"fine"


# --- the readers the pipeline calls (load without download) look at the mirrors too --------------------------------

def _with_toy_checksum(monkeypatch, name: str, payload: bytes) -> None:
    """The registry entry ``name`` with its first file's checksum set to ``payload``'s (test-only; the official
    entry is restored after the test)."""
    import dataclasses

    info = registry.DATASETS[name]
    fi = dataclasses.replace(info.files[0], checksum=f"md5:{md5(payload)}")
    monkeypatch.setitem(registry.DATASETS, name, dataclasses.replace(info, files=(fi,) + tuple(info.files[1:])))


def _svhn_mat(n: int = 5) -> bytes:
    import numpy as np
    import scipy.io

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                           "y": (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)})
    return buf.getvalue()


def _png_tar(folder: str, n: int = 3, size: int = 32) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(n):
            png = io.BytesIO()
            Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(png, format="PNG")
            ti = tarfile.TarInfo(f"{folder}/{i}.png")
            ti.size = len(png.getvalue())
            tf.addfile(ti, io.BytesIO(png.getvalue()))
    return buf.getvalue()


def test_svhn_and_an_image_folder_set_load_from_a_mirror_without_download(server, tmp_path, monkeypatch):
    from ood.data import load

    mat, tgz = _svhn_mat(), _png_tar("iSUN")
    _with_toy_checksum(monkeypatch, "svhn", mat)
    _with_toy_checksum(monkeypatch, "isun", tgz)
    (server["folder"] / "test_32x32.mat").write_bytes(mat)
    (server["folder"] / "iSUN.tar.gz").write_bytes(tgz)
    root = tmp_path / "data"
    with pytest.raises(fetching.DataMissingError, match="svhn"):      # no mirror: the one-line message, as before
        load("svhn", "test", root)
    with registry.profile_mirrors([server["url"]]):                   # a profile's benchmark.mirrors
        sv = load("svhn", "test", root)
        isun = load("isun", "test", root)
    assert len(sv) == 5 and sv.images.shape[1:] == (3, 32, 32)
    assert len(isun) == 3
    assert "/test_32x32.mat" in server["log"] and "/iSUN.tar.gz" in server["log"]
    assert registry.mirror_list() == []                               # the profile's mirrors end with the block


def test_a_reader_names_the_mirrors_it_tried(server, tmp_path, monkeypatch):
    from ood.data import load

    monkeypatch.setenv(registry.MIRRORS_ENV, server["url"])
    with pytest.raises(fetching.DataMissingError, match=r"300K_random_images\.npy not at the mirrors tried"):
        load("300k-random", "train", tmp_path / "data")
    assert files_under(tmp_path / "data") == [] or all(not p.endswith(".npy") for p in files_under(tmp_path / "data"))


def test_load_benchmark_reads_the_profiles_mirror_key(monkeypatch):
    from ood import benchmark, config

    seen = []
    monkeypatch.setattr(benchmark, "_load_benchmark", lambda *a, **k: seen.append(registry.mirror_list()) or "ok")
    monkeypatch.delenv(registry.MIRRORS_ENV, raising=False)
    params = config.load_params()
    params["profiles"]["synthetic"]["benchmark"]["mirrors"] = ["/srv/mirror-a", "https://example.org/m"]
    assert benchmark.load_benchmark(params, "synthetic") == "ok"
    assert seen == [["/srv/mirror-a", "https://example.org/m"]] and registry.mirror_list() == []
