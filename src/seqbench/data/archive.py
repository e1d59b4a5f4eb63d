"""Getting a dataset archive onto disk safely: download with checksum, verified extraction.

Downloads go through `pooch` (checksums, retries, progress bar) rather than hand-written
HTTP. Extraction is our own because no library refuses *all* links and device files while
also staying atomic: members are checked one by one, written into a temporary sibling
directory, and only a complete extraction is renamed into place, so an interrupted or
corrupt archive never leaves a half-written cache behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path


class ArchiveError(RuntimeError):
    """The archive is missing, corrupt, truncated or unsafe; the message says what to do."""


class UnsafeArchiveError(ArchiveError):
    """A member would escape the target directory, or is a link or device."""


class DownloadError(ArchiveError):
    """The archive could not be fetched (offline, server error, checksum mismatch)."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, known_hash: str | None, cache_dir: Path, fname: str, data_key: str) -> Path:
    """Fetch ``url`` once into ``cache_dir`` (checksum verified, progress bar) and return the path.

    ``data_key`` is the config key a user sets to point at a local copy instead; it is named
    in the error raised when the download fails.
    """
    import pooch  # imported lazily: only needed when a download may happen

    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        path = pooch.retrieve(
            url=url,
            known_hash=known_hash,
            fname=fname,
            path=cache_dir,
            progressbar=True,
        )
    except ValueError as exc:  # pooch raises ValueError on a checksum mismatch
        raise DownloadError(
            f"downloaded {url} but its checksum does not match {known_hash} ({exc}); "
            f"nothing was kept in {cache_dir}. Download it by hand and set {data_key}=/path/to/{fname}"
        ) from exc
    except Exception as exc:  # requests' connection / HTTP errors, offline machines
        raise DownloadError(
            f"could not download {url} ({type(exc).__name__}: {exc}). If this machine is offline, "
            f"download {fname} elsewhere (expected checksum {known_hash}) and set "
            f"{data_key}=/path/to/{fname} (an extracted directory works too)."
        ) from exc
    return Path(path)


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    kind = None
    if member.issym() or member.islnk():
        kind = "link"
    elif member.isdev() or member.isfifo():
        kind = "device or fifo"
    elif not (member.isfile() or member.isdir()):
        kind = "special file"
    if kind:
        raise UnsafeArchiveError(f"refusing archive member {member.name!r}: it is a {kind}")
    target = (root / member.name).resolve()
    if os.path.isabs(member.name) or not target.is_relative_to(root.resolve()):
        raise UnsafeArchiveError(
            f"refusing archive member {member.name!r}: it would be written outside {root}"
        )


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a tar archive into ``dest`` atomically, refusing links, devices and path escapes.

    Returns ``dest``. If ``dest`` already exists it is trusted (it was only ever created by a
    complete extraction). On any error nothing is left behind and an ``ArchiveError`` says why.
    """
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:  # streams: one pass over the (possibly gzipped) archive
                _check_member(member, tmp)
                if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                    tar.extract(member, tmp, filter="data")
                else:  # pragma: no cover - _check_member already refused what the filter would
                    tar.extract(member, tmp)
        os.replace(tmp, dest)
    except UnsafeArchiveError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(
            f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}); nothing was "
            f"extracted. Delete it and download it again."
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
