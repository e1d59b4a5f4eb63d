"""End to end: real (small) training runs written to a real MLflow store, read back via its API."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import OmegaConf

from helpers import REPO, make_config, probe_autocast, run_main, tiny
from seqbench.data.archive import ArchiveError
from seqbench.train import train
from seqbench.training.hardware import cpu_bf16_problem
from test_models import ARCHS, EXPECTED_PARAMS

SMALL_SYNTHETIC = tiny()


def _client(cfg) -> MlflowClient:
    return MlflowClient(cfg.logger.tracking_uri)


def _artifact_paths(client: MlflowClient, run_id: str, path: str) -> list[str]:
    return [a.path for a in client.list_artifacts(run_id, path)]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_model_trains_two_epochs_and_is_tracked(arch, tmp_path):
    cfg = make_config(
        tmp_path, [f"model={arch}", "trainer.max_epochs=2", "seed=5", *SMALL_SYNTHETIC]
    )
    result = train(cfg)
    client = _client(cfg)
    run = client.get_run(result.run_id)

    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{arch}-seed5"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "synthetic"
    assert exp.artifact_location.startswith(
        Path(tmp_path).as_uri()
    )  # never a cwd-relative ./mlruns

    params = run.data.params
    assert params["model.arch"] == arch and params["seed"] == "5"
    assert params["trainer.max_epochs"] == "2" and params["data.batch_size"] == "64"
    assert params["model.optimizer.lr"] == "0.001"
    assert len(params) > 40  # the whole resolved config, flattened

    tags = run.data.tags
    for key in (
        "model",
        "git.commit",
        "git.dirty",
        "version.torch",
        "version.lightning",
        "version.seqbench",
        "host",
        "data.fingerprint",
    ):
        assert tags.get(key), key
    assert tags["model"] == arch

    for name in (
        "val/acc",
        "val/loss",
        "train/acc",
        "train/loss",
        "perf/epoch_seconds",
        "perf/samples_per_second",
    ):
        history = client.get_metric_history(result.run_id, name)
        assert len(history) == 2, name
    assert all(m.value > 0 for m in client.get_metric_history(result.run_id, "perf/epoch_seconds"))
    metrics = run.data.metrics
    for name in ("test/acc", "test/loss", "test/f1", "test/auroc", "val/acc_best"):
        assert name in metrics, name
    # the run is marked FINISHED only after the test metrics are in
    test_logged = max(m.timestamp for m in client.get_metric_history(result.run_id, "test/acc"))
    assert run.info.end_time >= test_logged
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["model/trainable_params"] == EXPECTED_PARAMS[arch] - (
        (5000 - 32) * (128 if arch == "stacked_lstm" else 32)
        if arch != "stacked_lstm"
        else (10000 - 32) * 128
    )  # the synthetic task has a 32-word vocabulary; everything else is the seed architecture

    checkpoints = _artifact_paths(client, result.run_id, "checkpoints")
    assert len(checkpoints) == 1 and checkpoints[0].endswith(".ckpt")
    assert "config/config.yaml" in _artifact_paths(client, result.run_id, "config")
    config_text = Path(
        client.download_artifacts(result.run_id, "config/config.yaml", str(tmp_path))
    ).read_text()
    assert OmegaConf.create(config_text).model.arch == arch


@pytest.mark.parametrize("arch", ["bilstm", "cnn_lstm"])
def test_mixed_precision_is_chosen_by_config(arch, tmp_path):
    """bf16 autocast on CPU (GPU runs use the same key: trainer=gpu trainer.precision=bf16-mixed):
    every training forward pass, in the batch slices' threads too, ran under autocast and gave
    bf16 logits, and the run records the precision."""
    if why := cpu_bf16_problem():  # refused there: tests/test_bad_input.py
        pytest.skip(f"bf16 autocast cannot train here: {why}")
    cfg = make_config(
        tmp_path,
        [f"model={arch}", "trainer.precision=bf16-mixed", "trainer.max_epochs=1", *SMALL_SYNTHETIC]
        + ["num_threads=2", "batch_split=2"],
    )
    probe_autocast(cfg, tmp_path / "autocast.json")
    result = train(cfg)
    run = _client(cfg).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["trainer.precision"] == "bf16-mixed"
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0
    passes = json.loads((tmp_path / "autocast.json").read_text())
    assert len(passes) >= 2 * 5  # 2 slices x 5 batches of 64 (270 training examples)
    assert all(p == {"autocast": True, "dtype": "torch.bfloat16"} for p in passes), passes[:3]


def test_recurrent_model_learns_the_synthetic_task(tmp_path):
    """The generated task is learnable by an LSTM (bag of words is at chance by construction)."""
    cfg = make_config(tmp_path, ["data=synthetic", "trainer.max_epochs=4"])
    result = train(cfg)
    assert result.metrics["test/acc"] > 0.8


def test_seed_zero_is_reproducible(tmp_path):
    overrides = ["seed=0", "trainer.max_epochs=1", "trainer.deterministic=true", *SMALL_SYNTHETIC]
    first = train(make_config(tmp_path / "a", overrides)).metrics
    second = train(make_config(tmp_path / "b", overrides)).metrics
    third = train(make_config(tmp_path / "c", [*overrides, "seed=1"])).metrics
    assert first["val/loss"] == second["val/loss"] and first["test/loss"] == second["test/loss"]
    assert first["val/loss"] != third["val/loss"]


def test_bad_data_fails_before_any_run_is_created(tmp_path):
    cfg = make_config(tmp_path, [f"data.archive={tmp_path}/missing.tar.gz"])
    with pytest.raises(ArchiveError, match="does not exist"):
        train(cfg)
    exp = _client(cfg).get_experiment_by_name("imdb")
    assert exp is None or _client(cfg).search_runs([exp.experiment_id]) == []


def test_a_failure_after_the_run_started_marks_it_failed_with_the_reason(tmp_path):
    # Lightning raises at the end of the first validation: the monitored metric does not exist.
    # (A value the model refuses, such as model.net.dropout=2.0, is refused before any run
    # exists: tests/test_model_checks.py.)
    overrides = ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/nonexistent"]
    cfg = make_config(tmp_path, [*SMALL_SYNTHETIC, *overrides])
    with pytest.raises(RuntimeError, match="val/nonexistent"):
        train(cfg)
    (run,) = _client(cfg).search_runs(
        [_client(cfg).get_experiment_by_name("synthetic").experiment_id]
    )
    assert run.info.status == "FAILED"
    assert "val/nonexistent" in run.data.tags["seqbench.error"]


@pytest.mark.scenario
@pytest.mark.realdata
def test_real_imdb_subset_run(tmp_path, shared_archive, real_imdb_cache):
    cfg = make_config(
        tmp_path,
        [
            f"data.archive={shared_archive}",
            f"data.cache_dir={real_imdb_cache}",
            "data.subset=400",
            "trainer.max_epochs=1",
            "data.max_len=200",
        ],
    )
    result = train(cfg)
    run = _client(cfg).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    sha = hashlib.sha256(shared_archive.read_bytes()).hexdigest()
    assert run.data.tags["data.fingerprint"] == sha
    assert run.data.params["data.archive"] == str(shared_archive)
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0
    assert len(_client(cfg).get_metric_history(result.run_id, "val/acc")) == 1


def _cli(args: list[str], cwd: Path, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQBENCH_ROOT": str(root), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "seqbench.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_runs_from_any_directory_into_the_project_outputs(tmp_path, monkeypatch, capfd):
    """The store and the run's folder land under the project root, and the folder holds this
    run: Hydra's composed config is the config the run logged, and the best checkpoint holds
    the trained epoch, the network's weights and the checkpoint the run uploaded. The command
    runs in this process (its exit statuses are tested as a process in test_bad_input.py)."""
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = [*SMALL_SYNTHETIC, "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"]
    code, output = run_main(tmp_path, args, monkeypatch, capfd)
    assert code == 0, output[-3000:]
    assert not any(elsewhere.iterdir())  # nothing written to the working directory
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id, downloads = runs[0].info.run_id, tmp_path / "downloads"

    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    logged = OmegaConf.load(client.download_artifacts(run_id, "config/config.yaml", downloads))
    assert logged.paths.output_dir == str(run_dir) and logged.data.n_train == 300
    composed = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    composed.paths.output_dir = str(run_dir)  # ${hydra:runtime.output_dir} outside Hydra
    monkeypatch.setenv("SEQBENCH_ROOT", str(tmp_path))  # the environment the run had
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert OmegaConf.to_container(composed, resolve=True) == OmegaConf.to_container(logged)

    (best,) = (run_dir / "checkpoints").glob("epoch*.ckpt")
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert state["epoch"] == 0 and state["global_step"] == 5  # 270 training examples / 64
    weights = {
        k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")
    }
    fresh = instantiate(logged.model.net).state_dict()
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in fresh.items()}
    uploaded = client.download_artifacts(run_id, "checkpoints/best.ckpt", downloads)
    uploaded_state = torch.load(uploaded, map_location="cpu", weights_only=True)["state_dict"]
    assert uploaded_state.keys() == state["state_dict"].keys()
    assert all(torch.equal(uploaded_state[k], v) for k, v in state["state_dict"].items())


def test_cli_wrong_choice_names_the_valid_ones(tmp_path):
    done = _cli(["model=transformer"], tmp_path, tmp_path)
    assert done.returncode != 0
    for name in ("lstm", "bilstm", "cnn_lstm", "stacked_lstm"):
        assert name in done.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "seqbench-train"
    assert script.is_file(), "pip install -e . should install the seqbench-train console script"
    assert (REPO / "conf" / "train.yaml").is_file()


def test_sigterm_marks_the_run_killed_and_leaves_a_resumable_checkpoint(tmp_path):
    """A cluster time limit or `kill`: the run is KILLED (not FINISHED or lost) and last.ckpt exists."""
    env = {**os.environ, "SEQBENCH_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seqbench.train",
            *SMALL_SYNTHETIC,
            "data.n_train=3000",
            "trainer.max_epochs=500",
            "callbacks.progress_bar.refresh_rate=0",
            "logger.experiment_name=killed",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "outputs" / "runs").glob("*/checkpoints/last.ckpt")):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint written in time"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert len(client.get_metric_history(runs[0].info.run_id, "val/acc")) >= 1


def test_ddp_two_processes_make_one_tracked_run(tmp_path):
    """trainer=ddp on 2 CPU processes (gloo): only rank 0 tracks; batches are split by our sampler."""
    done = _cli(
        [
            *SMALL_SYNTHETIC,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=2",
            "callbacks.progress_bar.refresh_rate=0",
            "logger.experiment_name=ddp",
        ],
        tmp_path,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "val/acc")) == 2
    assert "test/acc" in runs[0].data.metrics
