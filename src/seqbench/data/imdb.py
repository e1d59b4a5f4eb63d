"""The Large Movie Review Dataset (Maas et al., 2011): locating, fetching and reading it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from seqbench.data.archive import ArchiveError, download, file_sha256, safe_extract
from seqbench.data.corpus import RawCorpus, stratified_sample

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "md5:7c2ac02c03563afcf9b574c7e56c153a"
IMDB_FILENAME = "aclImdb_v1.tar.gz"
CLASSES = ["neg", "pos"]


def find_imdb_root(path: Path) -> Path:
    """The ``aclImdb`` directory at or directly below ``path``; an error naming what is missing."""
    for candidate in (path, path / "aclImdb"):
        if all((candidate / s / c).is_dir() for s in ("train", "test") for c in CLASSES):
            return candidate
    raise ArchiveError(
        f"{path} is not an IMDB dataset: expected train/pos, train/neg, test/pos and test/neg "
        f"(the layout of aclImdb_v1.tar.gz) at or directly below it"
    )


def directory_fingerprint(root: Path) -> str:
    """Cheap identity of an extracted directory: names and sizes of every review file."""
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for cls in CLASSES:
            folder = root / split / cls
            for name in sorted(os.listdir(folder)):
                digest.update(f"{split}/{cls}/{name}:{(folder / name).stat().st_size}\n".encode())
    return "dir-" + digest.hexdigest()


def locate(
    archive: str | None, cache_dir: Path, url: str = IMDB_URL, known_hash: str = IMDB_MD5
) -> tuple[Path, str]:
    """Resolve the configured source to an extracted ``aclImdb`` root and its fingerprint.

    ``archive`` may be a ``.tar.gz`` or an extracted directory; when it is empty the official
    archive is downloaded once into ``cache_dir``. Archives are extracted once per checksum.
    """
    if archive and not Path(archive).expanduser().exists():
        raise ArchiveError(f"data.archive={archive} does not exist")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / ".imdb.lock")):  # parallel jobs share one download/extraction
        return _locate(archive, cache_dir, url, known_hash)


def _locate(archive: str | None, cache_dir: Path, url: str, known_hash: str) -> tuple[Path, str]:
    if archive:
        source = Path(archive).expanduser()
        if not source.exists():
            raise ArchiveError(f"data.archive={archive} does not exist")
        if source.is_dir():
            root = find_imdb_root(source)
            return root, directory_fingerprint(root)
    else:
        source = download(url, known_hash, cache_dir, IMDB_FILENAME, data_key="data.archive")
    sha = file_sha256(source)
    extracted = safe_extract(source, cache_dir / "extracted" / sha[:16])
    return find_imdb_root(extracted), sha


def _movie_urls(root: Path, split: str, cls: str, names: list[str]) -> list[str] | None:
    """The movie of each review file ``<id>_<rating>.txt``: line ``id`` of ``urls_<cls>.txt``
    (the archive's own map from review to movie page); None if that file is missing."""
    urls_file = root / split / f"urls_{cls}.txt"
    if not urls_file.is_file():
        return None
    urls = urls_file.read_text(encoding="utf-8").split()
    try:
        return [urls[int(name.split("_", 1)[0])] for name in names]
    except (ValueError, IndexError):
        raise ArchiveError(
            f"{urls_file} does not list a movie for every review in {split}/{cls}"
        ) from None


def _read_split(
    root: Path, split: str, subset: int | None, rng: np.random.Generator
) -> tuple[list[str], np.ndarray, list[str] | None]:
    files, labels, movies = [], [], []
    for label, cls in enumerate(CLASSES):
        names = sorted(n for n in os.listdir(root / split / cls) if n.endswith(".txt"))
        files += [root / split / cls / n for n in names]
        labels += [label] * len(names)
        urls = _movie_urls(root, split, cls, names)
        movies = None if urls is None or movies is None else movies + urls
    labels_arr = np.asarray(labels, dtype=np.int64)
    if subset:
        keep = stratified_sample(labels_arr, subset, rng)
        files = [files[i] for i in keep]
        labels_arr = labels_arr[keep]
        movies = [movies[i] for i in keep] if movies is not None else None
    texts = [f.read_text(encoding="utf-8") for f in tqdm(files, desc=f"read {split}", unit="file")]
    return texts, labels_arr, movies


def read_imdb(root: Path, subset: int | None = None, seed: int = 0) -> RawCorpus:
    """Read reviews (labels 0 = neg, 1 = pos); ``subset`` takes a stratified N of each split."""
    rng = np.random.default_rng(seed)
    train_texts, train_labels, movies = _read_split(root, "train", subset, rng)
    test_texts, test_labels, _ = _read_split(root, "test", subset, rng)
    return RawCorpus(train_texts, train_labels, test_texts, test_labels, CLASSES, movies)
