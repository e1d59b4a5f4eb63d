"""README's bad-input table, one test per row: the exit status, the message, and that nothing
was written (no MLflow run, no data cache), or, for a failure once training has started, a
FAILED run with the reason as a tag.

The rows run the real Hydra entry point (``seqbench.train.main`` with a real command line) in
this process, which costs a second per row instead of a fresh interpreter; the console script
itself and the unreachable server (where wall time is the point) run as subprocesses.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import cli_env, crafted_tar, make_config, run_console, run_main, tar_directory, tiny
from seqbench.config.validation import ConfigError

TINY = tiny(epochs=1, console=True)


def _run_main(
    root: Path, args: list[str], monkeypatch: pytest.MonkeyPatch, capfd
) -> tuple[int, str]:
    """``seqbench-train ARGS`` through the real Hydra entry point: (exit status, output)."""
    return run_main(root, [*args], monkeypatch, capfd)


def _nothing_written(root: Path, experiment: str) -> None:
    db = root / "outputs" / "mlflow" / "mlflow.db"
    if db.exists():
        client = MlflowClient(f"sqlite:///{db}")
        exp = client.get_experiment_by_name(experiment)
        assert exp is None or client.search_runs([exp.experiment_id]) == [], "an MLflow run"
    data = root / "outputs" / "data"
    # an empty lock file that serialised the extraction attempt is not a cache
    cached = (
        [p for p in data.rglob("*") if p.is_file() and p.suffix != ".lock"] if data.exists() else []
    )
    assert cached == [], f"cache files written: {cached}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model=transformer"], ["Could not find 'model/transformer'", "bilstm", "cnn_lstm"]),
        (["data.foo=1"], ["Could not override 'data.foo'", "Key 'foo' is not in struct"]),
        (["seed=abc"], ["seed='abc' is not valid: expected an integer >= 0"]),
        (["data.val_fraction=1.5"], ["data.val_fraction=1.5 is not valid", "between 0 and 1"]),
        (["data.max_len=0"], ["data.max_len=0 is not valid: expected an integer >= 1"]),
        (["data.batch_size=0"], ["data.batch_size=0 is not valid: expected an integer >= 1"]),
        (["model.vocab_size=2"], ["model.vocab_size=2 is not valid: expected an integer >= 4"]),
        (["model.optimizer.lr=0"], ["model.optimizer.lr=0 is not valid", "finite number > 0"]),
        (["trainer.max_epochs=0"], ["trainer.max_epochs=0 is not valid", "integer >= 1"]),
        (
            ["data.padding=middle"],
            ["data.padding='middle' is not valid: expected one of: pre, post"],
        ),
        (
            ["data.val_split=movie"],
            ["data.val_split='movie' is not valid: expected one of: stratified, grouped"],
        ),
        (["resume=sometimes"], ["resume='sometimes' is not valid; use auto, never, or a"]),
    ],
    ids=lambda v: v[0] if isinstance(v, list) and len(v) == 1 and "=" in v[0] else None,
)
def test_bad_config_values_stop_before_anything_is_written(
    tmp_path, monkeypatch, capfd, args, expected
):
    code, output = _run_main(tmp_path, [*TINY, *args], monkeypatch, capfd)
    assert code != 0
    for text in expected:
        assert text in output, output[-2000:]
    _nothing_written(tmp_path, "synthetic")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (  # added with +: the class refuses it, naming its settings (batching's included)
            [*TINY, "+data.batchsize=3"],
            [
                "invalid data configuration: data.batchsize is not a setting of "
                "SyntheticDataModule; its settings: name, num_classes, max_len",
                "batch_size, eval_batch_size",
                "n_train, n_test",
            ],
        ),
        (
            [*TINY, "data.vocab_size=5", "model.vocab_size=5"],
            [
                "invalid data configuration: data (SyntheticDataModule) refused its settings: "
                "synthetic vocab_size must be at least 6"
            ],
        ),
        (["data=text_files", "data.train=MISSING.csv"], ["data.train: MISSING.csv does not exist"]),
        (  # raised while the class is built (it checks its files at once)
            ["data=series", "data.train=MISSING.ts", "model=lstm_fcn"],
            ["data.train: MISSING.ts does not exist"],
        ),
    ],
    ids=["unknown_key", "refused_value", "missing_text_file", "missing_series_file"],
)
def test_a_data_refusal_is_one_message_and_exit_2(tmp_path, monkeypatch, capfd, args, expected):
    missing = str(tmp_path / "nope")
    args = [a.replace("MISSING", missing) for a in args]
    code, output = _run_main(tmp_path, [*args, "trainer.max_epochs=1"], monkeypatch, capfd)
    assert code == 2, output[-2000:]
    for text in expected:
        assert text.replace("MISSING", missing) in output, output[-2000:]
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output
    _nothing_written(tmp_path, "synthetic" if "data=synthetic" in args else "nope")


def test_data_subset_out_of_range_on_imdb(tmp_path, monkeypatch, capfd, fake_imdb_dir):
    code, output = _run_main(
        tmp_path, [f"data.archive={fake_imdb_dir}", "data.subset=1"], monkeypatch, capfd
    )
    assert code == 2
    assert "data.subset=1 is not valid: expected null or an integer >= 2" in output
    _nothing_written(tmp_path, "imdb")


def _corrupt(tmp_path: Path, fake_imdb_dir: Path) -> Path:
    path = tmp_path / "corrupt.tar.gz"
    path.write_bytes(b"this is not a gzip file" * 100)
    return path


def _truncated(tmp_path: Path, fake_imdb_dir: Path) -> Path:
    whole = tar_directory(fake_imdb_dir, tmp_path / "whole.tar.gz").read_bytes()
    path = tmp_path / "truncated.tar.gz"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _malicious(tmp_path: Path, fake_imdb_dir: Path) -> Path:
    import tarfile

    escape = tarfile.TarInfo("aclImdb/../../escape.txt")
    return crafted_tar(tmp_path / "evil.tar.gz", [escape])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t, f: t / "missing.tar.gz", "does not exist"),
        (_truncated, "truncated or corrupt"),
        (_corrupt, "truncated or corrupt"),
        (_malicious, "outside"),
    ],
    ids=["missing", "truncated", "corrupt", "malicious"],
)
def test_bad_archives_stop_before_a_run_or_cache_exists(
    tmp_path, monkeypatch, capfd, fake_imdb_dir, make, expected
):
    archive = make(tmp_path, fake_imdb_dir)
    code, output = _run_main(tmp_path, [f"data.archive={archive}"], monkeypatch, capfd)
    assert code == 2
    assert expected in output, output[-2000:]
    _nothing_written(tmp_path, "imdb")
    assert not (tmp_path / "escape.txt").exists()


def test_unwritable_output_folder(tmp_path, monkeypatch, capfd):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outputs should go")
    code, output = _run_main(
        tmp_path, [*TINY, f"paths.output_root={blocker}/outputs"], monkeypatch, capfd
    )
    assert code == 2
    assert f"paths.output_root={blocker}/outputs cannot be created" in output
    assert "is not a folder" in output
    assert not (tmp_path / "outputs").exists()


def test_non_finite_loss_fails_the_run_with_the_reason(tmp_path, monkeypatch, capfd):
    # An absurd learning rate overflows the weights within two steps.
    args = [*TINY, "model.optimizer.lr=1e37", "trainer.precision=32-true"]
    code, output = _run_main(tmp_path, args, monkeypatch, capfd)
    assert code == 2
    assert "non-finite training loss at epoch 1, batch" in output
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["seqbench.error"].startswith("NonFiniteLossError: non-finite training")


def _console(args: list[str], root: Path, env: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    done = run_console("seqbench-train", args, root, env)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_console_script_exit_status_for_a_bad_value(tmp_path):
    """Exit status 2 and the message, before the job's imports: a mistyped value costs no
    Lightning, torch or MLflow import (~12 CPU-seconds; Python's import profile says which
    modules the process loaded)."""
    env = {**cli_env(tmp_path), "PYTHONPROFILEIMPORTTIME": "1"}
    code, output, _ = _console([*TINY, "seed=abc"], tmp_path, env)
    assert code == 2 and "seed='abc' is not valid" in output
    assert "Traceback" not in output
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in output.splitlines()
        if line.startswith("import time:")
    }
    assert "seqbench.train" in imported  # the profile is there
    assert not imported & {"lightning", "torch", "mlflow"}, sorted(
        imported & {"lightning", "torch", "mlflow"}
    )
    _nothing_written(tmp_path, "synthetic")


def test_unreachable_tracking_server_fails_fast_naming_the_uri(tmp_path):
    env = {**cli_env(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    code, output, seconds = _console(TINY, tmp_path, env)
    assert code == 2
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:9" in output
    assert "MLFLOW_TRACKING_URI" in output
    # MLflow's own retries took 255 s here; the bound only tells the two apart (measured time,
    # with imports, is in README's table).
    assert seconds < 60, seconds
    assert not (tmp_path / "outputs" / "data").exists()


AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})


def test_bf16_on_a_cpu_without_avx512_is_refused_before_any_run(tmp_path, monkeypatch):
    """oneDNN has no bf16 LSTM kernel below AVX-512 (an AMD Zen 3 failed in the first step with
    "could not create a primitive descriptor for the LSTM forward propagation primitive"): the
    config check names the fix instead; AVX-512 without native bf16, AVX512-BF16, and a CPU
    whose flags are unknown pass, and so does bf16 on a GPU."""
    from seqbench.config import validation
    from seqbench.training import hardware

    assert hardware.cpu_bf16_problem(AVX2_ONLY)
    for flags in (AVX2_ONLY | set(hardware.AVX512_CORE_FLAGS), AVX2_ONLY | {"avx512_bf16"}):
        assert hardware.cpu_bf16_problem(frozenset(flags)) is None
    assert hardware.cpu_bf16_problem(frozenset()) is None

    monkeypatch.setattr(
        validation, "cpu_bf16_problem", lambda: hardware.cpu_bf16_problem(AVX2_ONLY)
    )
    bf16 = make_config(tmp_path, ["trainer.precision=bf16-mixed"])
    with pytest.raises(ConfigError) as refused:
        validation.check_config(bf16)
    assert "trainer.precision=bf16-mixed cannot train on this CPU" in str(refused.value)
    assert "trainer.precision=32-true" in str(refused.value)
    validation.check_config(make_config(tmp_path, ["trainer.precision=32-true"]))
    validation.check_config(make_config(tmp_path, ["trainer=gpu", "trainer.precision=bf16-mixed"]))
