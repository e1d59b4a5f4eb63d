from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import SHARED_ARCHIVE, write_fake_imdb  # noqa: E402

# Every `mlflow server` the tests start (and the team server script they run) would otherwise
# start MLflow 3's job runner: 8 huey worker processes, each importing MLflow (~20 CPU-s per
# server on CI's 2 cores), for GenAI jobs seqbench never submits. Set here so that every
# subprocess inherits it; a test can still set it back.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture(scope="session")
def fake_imdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_imdb(tmp_path_factory.mktemp("fake_imdb"))


@pytest.fixture(scope="session")
def shared_archive() -> Path:
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(
            f"real IMDB archive not found at {SHARED_ARCHIVE} (see ../shared/data/README.md)"
        )
    return SHARED_ARCHIVE


@pytest.fixture(scope="session")
def real_imdb_cache(shared_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One IMDB cache folder (extracted archive, encoded corpora) for every real-data test of
    this session, across xdist workers too: extracting 100k files and encoding 50k reviews
    takes minutes, and the tests check what is built from the data, not the first build (the
    build itself is tested on the small fake corpus). ``cached_corpus`` and ``locate`` hold
    file locks, so workers that arrive together build once."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, shared by its workers
    return base / "real-imdb-cache"


def _shares_a_module_fixture(item: pytest.Item) -> bool:
    # pytest has no public accessor for an item's fixture definitions; ``_fixtureinfo`` has
    # held them since pytest 3. Without it every test is scheduled alone (correct, slower).
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) if info is not None else {}
    return any(d.scope in ("module", "package") for chain in defs.values() for d in chain)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Scheduling for ``pytest -n 2 --dist loadgroup`` (the Makefile): a module whose tests
    share a module-scoped fixture (a server, a trained sweep) stays on one worker, so that
    fixture is built once; every other test is handed out on its own, modules with end-to-end
    (slow) tests first, so the longest tests do not pile up at the end while one worker idles."""
    for item in items:
        if _shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # Whole modules move, never single tests: pytest tears a module fixture down when the next
    # test comes from another module, so interleaving modules would build it again.
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)  # stable sort
