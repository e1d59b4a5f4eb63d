from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import SHARED_ARCHIVE, write_fake_imdb  # noqa: E402


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
