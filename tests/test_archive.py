"""Safe extraction, corrupt archives, and the real download code against a local HTTP server."""

import functools
import hashlib
import http.server
import tarfile
import threading
from pathlib import Path

import pytest

from helpers import crafted_tar, tar_directory
from seqbench.data.archive import (
    ArchiveError,
    DownloadError,
    UnsafeArchiveError,
    download,
    safe_extract,
)
from seqbench.data.imdb import find_imdb_root, locate


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("../escape.txt"), "outside"),
        (_member("aclImdb/../../escape.txt"), "outside"),
        (_member("/tmp/absolute.txt"), "outside"),
        (_member("aclImdb/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (_member("aclImdb/hard", tarfile.LNKTYPE, "aclImdb/README"), "link"),
        (_member("aclImdb/dev", tarfile.CHRTYPE), "device"),
        (_member("aclImdb/fifo", tarfile.FIFOTYPE), "device or fifo"),
    ],
)
def test_safe_extract_refuses_malicious_members(tmp_path, member, reason):
    archive = crafted_tar(tmp_path / "evil.tar.gz", [member])
    dest = tmp_path / "cache" / "extracted"
    with pytest.raises(UnsafeArchiveError, match=reason):
        safe_extract(archive, dest)
    assert not dest.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # no partial directory left behind
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/absolute.txt").exists()


def test_safe_extract_roundtrip(tmp_path, fake_imdb_dir):
    archive = tar_directory(fake_imdb_dir, tmp_path / "imdb.tar.gz")
    dest = safe_extract(archive, tmp_path / "x")
    assert find_imdb_root(dest) == dest / "aclImdb"
    assert len(list((dest / "aclImdb" / "train" / "pos").iterdir())) == 20


def test_truncated_archive_is_a_clear_error_and_leaves_nothing(tmp_path, fake_imdb_dir):
    archive = tar_directory(fake_imdb_dir, tmp_path / "imdb.tar.gz")
    data = archive.read_bytes()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        safe_extract(broken, tmp_path / "cache" / "x")
    assert list((tmp_path / "cache").iterdir()) == []


def test_garbage_archive_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        locate(str(junk), tmp_path / "cache")


def test_directory_without_imdb_layout_names_what_is_missing(tmp_path):
    with pytest.raises(ArchiveError, match="train/pos"):
        locate(str(tmp_path), tmp_path / "cache")


def test_missing_archive_path(tmp_path):
    with pytest.raises(ArchiveError, match="does not exist"):
        locate(str(tmp_path / "nope.tar.gz"), tmp_path / "cache")


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_checksum_and_caches(tmp_path, fake_imdb_dir, http_server):
    www, url = http_server
    archive = tar_directory(fake_imdb_dir, www / "aclImdb_v1.tar.gz")
    md5 = "md5:" + hashlib.md5(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    root, fingerprint = locate(None, cache, url=f"{url}/aclImdb_v1.tar.gz", known_hash=md5)
    assert (root / "train" / "neg").is_dir()
    assert (cache / "aclImdb_v1.tar.gz").is_file()
    archive.unlink()  # second call must use the cache, not the network
    assert locate(None, cache, url=f"{url}/aclImdb_v1.tar.gz", known_hash=md5) == (
        root,
        fingerprint,
    )


def test_download_checksum_mismatch_keeps_nothing(tmp_path, fake_imdb_dir, http_server):
    www, url = http_server
    tar_directory(fake_imdb_dir, www / "aclImdb_v1.tar.gz")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="checksum"):
        download(
            f"{url}/aclImdb_v1.tar.gz",
            "md5:" + "0" * 32,
            cache,
            "aclImdb_v1.tar.gz",
            "data.archive",
        )
    assert not (cache / "aclImdb_v1.tar.gz").exists()


def test_offline_error_says_what_to_download_and_which_key(tmp_path):
    with pytest.raises(DownloadError) as info:
        # port 9 on loopback: nothing listens, the connection is refused at once
        locate(
            None,
            tmp_path / "cache",
            url="http://127.0.0.1:9/aclImdb_v1.tar.gz",
            known_hash="md5:" + "0" * 32,
        )
    message = str(info.value)
    assert "data.archive=" in message and "aclImdb_v1.tar.gz" in message
