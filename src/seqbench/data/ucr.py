"""``data=ucr``: a UCR/UEA archive data set by name, its own train and test files located.

Bundled data sets (inside the installed aeon package: BasicMotions, GunPoint, JapaneseVowels,
...) are read offline. Any other archive name is downloaded once from the archive's site into
the data cache, through ``seqbench.data.archive.download`` (pooch: progress bar, retries, a
partial download never left under the final name), then extracted from its zip atomically
(members checked, a temporary sibling folder renamed into place). A name that is neither
bundled nor in aeon's list of UCR/UEA names is refused before anything is fetched.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from seqbench.data.archive import ArchiveError, UnsafeArchiveError, download
from seqbench.data.series_files import SeriesDataError

UCR_URL = "https://timeseriesclassification.com/aeon-toolkit/{name}.zip"
FORMATS = (".ts", ".arff")


def bundled_dir() -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def bundled_names() -> list[str]:
    """Classification data sets shipped inside aeon: a ``<name>_TRAIN.ts`` whose header says
    ``@classLabel true`` (aeon also ships regression sets, e.g. CardanoSentiment, whose targets
    are numbers, not classes)."""
    return list(_bundled_names())


@functools.cache
def _bundled_names() -> tuple[str, ...]:
    """Read once per process: the installed package does not change under a run."""
    root = bundled_dir()
    return tuple(
        sorted(p.name for p in root.iterdir() if _has_class_labels(p / f"{p.name}_TRAIN.ts"))
    )


def _has_class_labels(ts_file: Path) -> bool:
    """Whether a ``.ts`` file's header declares class labels (read up to ``@data`` only)."""
    if not ts_file.is_file():
        return False
    with ts_file.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            words = line.strip().lower().split()
            if words[:1] == ["@data"]:
                return False
            if words[:2] == ["@classlabel", "true"]:
                return True
    return False


def archive_names() -> set[str]:
    """The UCR (128) and UEA (30) classification data set names aeon knows of."""
    from aeon.datasets import tsc_datasets

    return set(tsc_datasets.univariate) | set(tsc_datasets.multivariate)


def _find_pair(folder: Path, name: str) -> tuple[Path, Path] | None:
    for ext in FORMATS:
        train = sorted(folder.rglob(f"{name}_TRAIN{ext}"))
        test = sorted(folder.rglob(f"{name}_TEST{ext}"))
        if train and test:
            return train[0], test[0]
    return None


def unknown_name_message(name: str) -> str:
    bundled = bundled_names()
    close = difflib.get_close_matches(name, [*bundled, *sorted(archive_names())], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"data.name={name!r} is not a UCR/UEA classification data set.{hint} Bundled (offline): "
        f"{', '.join(bundled)}. Any other UCR/UEA name (e.g. data.name=Adiac) is downloaded once "
        f"from {UCR_URL.format(name='<name>')} into the data cache; offline, download the zip "
        "elsewhere and set data.archive=/path/to/<name>.zip (or its extracted folder)."
    )


def safe_extract_zip(archive: Path, dest: Path) -> Path:
    """Extract a zip into ``dest`` atomically, refusing links and paths outside ``dest``."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise UnsafeArchiveError(f"refusing zip member {member.filename!r}: a link")
                target = (tmp / member.filename).resolve()
                if os.path.isabs(member.filename) or not target.is_relative_to(tmp.resolve()):
                    raise UnsafeArchiveError(
                        f"refusing zip member {member.filename!r}: it would be written outside {dest}"
                    )
                zf.extract(member, tmp)
        os.replace(tmp, dest)
    except UnsafeArchiveError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(
            f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}); nothing was "
            "extracted. Delete it and run again to download it anew."
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _fingerprint(paths: tuple[Path, Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def locate(
    name: str, cache_dir: Path, archive: str | None = None, url: str = UCR_URL
) -> tuple[Path, Path, str]:
    """(train file, test file, content fingerprint) of data set ``name``.

    ``archive``: a local zip or folder holding ``<name>_TRAIN.ts``/``_TEST.ts`` (or ``.arff``);
    otherwise the bundled copy, else the cache, else one download of ``url``."""
    if archive:
        source = Path(archive).expanduser()
        if not source.exists():
            raise SeriesDataError(f"data.archive: {source} does not exist")
        folder = source if source.is_dir() else safe_extract_zip(source, cache_dir / name)
        pair = _find_pair(folder, name)
        if pair is None:
            raise SeriesDataError(
                f"data.archive {source} holds no {name}_TRAIN/{name}_TEST .ts or .arff files"
            )
        return (*pair, _fingerprint(pair))
    bundled = bundled_dir() / name
    if name in bundled_names():
        pair = _find_pair(bundled, name)
        assert pair is not None
        return (*pair, _fingerprint(pair))
    if name not in archive_names() and not (cache_dir / name).is_dir():
        raise SeriesDataError(unknown_name_message(name))
    folder = cache_dir / name
    if not folder.is_dir():
        zipped = download(url.format(name=name), None, cache_dir, f"{name}.zip", "data.archive")
        try:
            safe_extract_zip(zipped, folder)
        except ArchiveError:
            zipped.unlink(missing_ok=True)  # ours: the next run downloads it again
            raise
    pair = _find_pair(folder, name)
    if pair is None:
        raise SeriesDataError(
            f"{folder} (from {url.format(name=name)}) holds no {name}_TRAIN/{name}_TEST .ts or "
            f".arff files; delete it and check data.name"
        )
    return (*pair, _fingerprint(pair))
