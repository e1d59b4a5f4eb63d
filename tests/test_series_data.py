"""Numeric series data: every file format round trip, unequal lengths with NaNs, normalisation,
bundled UCR/UEA data read offline, and the download path against a local HTTP server."""

from __future__ import annotations

import http.server
import io
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from seqbench.data.archive import ArchiveError, DownloadError
from seqbench.data.series import SeriesFilesDataModule, UCRDataModule
from seqbench.data.series_files import read_series
from seqbench.data.series_prep import Normalizer, fill_missing, trim
from seqbench.data.ucr import bundled_names, locate
from series_data import toy_series, write_arff, write_npz, write_table, write_ts


@pytest.mark.parametrize(
    ("suffix", "writer", "channels", "ragged"),
    [
        (".ts", write_ts, 2, False),
        (".ts", write_ts, 2, True),
        (".arff", write_arff, 1, False),
        (".npz", write_npz, 2, False),
        (".npz", lambda p, s, y: write_npz(p, s, y, ragged=True), 2, True),
        (".parquet", write_table, 2, True),
        (".jsonl", write_table, 3, True),
    ],
    ids=["ts", "ts-unequal", "arff", "npz-3d", "npz-object", "parquet", "jsonl"],
)
def test_each_format_reads_back_the_same_series_and_labels(
    tmp_path, suffix, writer, channels, ragged
):
    series, labels = toy_series(9, channels, ragged=ragged)
    path = writer(tmp_path / f"toy{suffix}", series, labels)
    table = read_series(path)
    assert table.channels == channels and len(table) == 9
    assert list(table.labels) == list(labels)
    for got, want in zip(table.series, series, strict=True):
        np.testing.assert_allclose(got, want)


def test_unequal_lengths_with_missing_values_are_trimmed_and_imputed(tmp_path):
    series, labels = toy_series(6, 2, ragged=True)
    series[0] = np.concatenate([series[0], np.full((2, 4), np.nan)], axis=1)  # NaN padding
    series[1][0, 2] = np.nan  # one missing value inside
    series[2][1, :] = np.nan  # a channel with no observation
    original_length = series[0].shape[1] - 4
    path = write_ts(tmp_path / "gaps.ts", series, labels)
    table = read_series(path)
    x0 = trim(table.series[0])
    assert x0.shape[1] == original_length  # trailing all-channel NaNs end the series
    x1 = fill_missing(table.series[1])
    assert x1[0, 2] == pytest.approx((series[1][0, 1] + series[1][0, 3]) / 2)  # linear in time
    assert np.all(fill_missing(table.series[2])[1] == 0.0)
    dm = SeriesFilesDataModule(
        train=str(path), test=str(path), cache_dir=str(tmp_path / "cache"), val_fraction=0.3
    )
    dm.setup("fit")
    assert dm.channels == 2 and dm.input_kind == "numeric"
    assert not np.isnan(dm.corpus.train.tokens).any()
    assert dm.corpus.test.lengths[0] == original_length
    values, lengths, _ = next(iter(dm.test_dataloader()))
    assert values.shape[-1] == 2 and values.shape[1] == int(lengths.max())
    for row, n in enumerate(lengths.tolist()):
        assert (values[row, n:] == 0).all()  # padded after the series


def test_normalisations(tmp_path):
    rng = np.random.default_rng(1)
    train = [rng.normal(5, 2, size=(2, 30)) for _ in range(20)]
    per_series = Normalizer("series").fit(train)(train[0])
    np.testing.assert_allclose(per_series.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(per_series.std(axis=1), 1, atol=1e-9)
    channel = Normalizer("channel").fit(train)
    stacked = np.concatenate([channel(x) for x in train], axis=1)
    np.testing.assert_allclose(stacked.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(stacked.std(axis=1), 1, atol=1e-9)
    state = channel.state()
    again = Normalizer(state["kind"], state["mean"], state["std"])  # as scoring rebuilds it
    np.testing.assert_allclose(again(train[3]), channel(train[3]))
    np.testing.assert_array_equal(Normalizer("none").fit(train)(train[0]), train[0])


def test_bundled_dataset_reads_offline_keeps_the_archive_split_and_caches(tmp_path):
    assert {"BasicMotions", "GunPoint", "ItalyPowerDemand", "JapaneseVowels"} <= set(
        bundled_names()
    )
    # aeon's regression sets (numeric targets) are not offered as classification data
    assert not {"CardanoSentiment", "Covid3Month"} & set(bundled_names())
    dm = UCRDataModule(name="JapaneseVowels", cache_dir=str(tmp_path))
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes["train"] + sizes["val"] == 270 and sizes["test"] == 370  # the archive's split
    assert dm.channels == 12 and dm.num_classes == 9
    assert len(set(dm.corpus.train.lengths.tolist())) > 1  # unequal lengths kept
    # stratified validation: every class in it
    assert set(np.unique(dm.splits["val"].labels)) == set(range(9))
    again = UCRDataModule(name="JapaneseVowels", cache_dir=str(tmp_path))
    again.setup("fit")
    assert again.corpus.meta["cache_hit"] is True
    np.testing.assert_array_equal(again.corpus.test.tokens, dm.corpus.test.tokens)


def _zip_bytes(name: str) -> bytes:
    series, labels = toy_series(9, 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for split in ("TRAIN", "TEST"):
            path = Path(tempfile.gettempdir()) / f"{name}_{split}_{os.getpid()}.ts"
            write_ts(path, series, labels)
            zf.write(path, f"{name}/{name}_{split}.ts")
            path.unlink()
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zip_server():
    """A local HTTP server: ``/Adiac.zip`` a good archive, ``/Beef.zip`` a truncated one."""
    files = {"/Adiac.zip": _zip_bytes("Adiac"), "/Beef.zip": _zip_bytes("Beef")[:300]}
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{{name}}.zip", hits
    server.shutdown()


def test_download_path_fetches_once_extracts_and_reuses_the_cache(tmp_path, zip_server):
    url, hits = zip_server
    cache = tmp_path / "archives"
    train, test, fingerprint = locate("Adiac", cache, url=url)
    assert train.name == "Adiac_TRAIN.ts" and test.name == "Adiac_TEST.ts"
    assert len(read_series(train)) == 9
    before = hits.count("/Adiac.zip")
    assert locate("Adiac", cache, url=url)[2] == fingerprint
    assert hits.count("/Adiac.zip") == before == 1  # downloaded once
    assert not list(cache.glob(".*partial*"))


def test_corrupt_download_leaves_nothing_behind(tmp_path, zip_server):
    url, _ = zip_server
    cache = tmp_path / "archives"
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        locate("Beef", cache, url=url)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_offline_download_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(DownloadError, match="data.archive=/path/to/Adiac.zip"):
        locate("Adiac", tmp_path, url="http://127.0.0.1:9/{name}.zip")


def test_local_archive_zip(tmp_path):
    archive = tmp_path / "Adiac.zip"
    archive.write_bytes(_zip_bytes("Adiac"))
    train, _, _ = locate("Adiac", tmp_path / "cache", archive=str(archive))
    assert train.is_file()
