"""Test helpers: composing real Hydra configs, small fake IMDB corpora, crafted archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback
from omegaconf import DictConfig, open_dict

from seqbench.config.paths import config_dir, register_resolvers

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "aclImdb_v1-labeled.tar.gz"

register_resolvers()


def make_config(tmp_path: Path, overrides: list[str] | None = None) -> DictConfig:
    """The real composed `train` config, with every output under ``tmp_path``."""
    base = [
        f"paths.output_root={tmp_path}/outputs",
        f"paths.output_dir={tmp_path}/outputs/run",
        f"logger.tracking_uri=sqlite:///{tmp_path}/outputs/mlflow/mlflow.db",
        "callbacks.progress_bar.refresh_rate=0",
        "trainer.enable_model_summary=false",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=base + list(overrides or []), return_hydra_config=False)
    with open_dict(cfg):
        cfg.callbacks.pop("progress_bar", None)
        cfg.trainer.enable_progress_bar = False
    return cfg


def tiny(
    epochs: int | None = None,
    *,
    n_train: int = 300,
    n_test: int = 100,
    max_len: int = 30,
    console: bool = False,
) -> list[str]:
    """Overrides for the small synthetic task the end-to-end tests train (seconds per run), so
    every test names only what it needs to differ. ``epochs``: ``trainer.max_epochs`` (None
    keeps the config's); ``console``: no progress bar and no model summary either, for
    ``seqbench-train`` started as a process (``make_config`` turns both off itself)."""
    overrides = [
        "data=synthetic",
        f"data.n_train={n_train}",
        f"data.n_test={n_test}",
        f"data.max_len={max_len}",
    ]
    if epochs is not None:
        overrides.append(f"trainer.max_epochs={epochs}")
    if console:
        overrides += ["callbacks.progress_bar.refresh_rate=0", "trainer.enable_model_summary=false"]
    return overrides


POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "moving", "best"]
NEGATIVE = ["awful", "boring", "terrible", "worst", "waste", "dull", "hated"]
FILLER = ["the", "movie", "film", "a", "plot", "actor", "and", "it", "was", "story", "scene", "of"]


def fake_review(label: int, rng: np.random.Generator) -> str:
    words = list(rng.choice(FILLER, size=int(rng.integers(8, 40))))
    cue = POSITIVE if label else NEGATIVE
    for _ in range(3):
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cue)))
    return " ".join(words).capitalize() + ".<br /><br />The end."


def fake_movie(split: str, review_id: int) -> str:
    """The movie page of fake review ``review_id``: four reviews per movie and class, and the
    positive and negative reviews with the same ids share movies (so movies mix labels)."""
    return f"http://www.imdb.com/title/tt{'1' if split == 'train' else '2'}{review_id // 4:06d}/usercomments"


def write_fake_imdb(
    root: Path, n_per_class: int = 20, seed: int = 0, movie_urls: bool = True
) -> Path:
    """An ``aclImdb/`` directory in the official layout (no ``train/unsup``, like the shared
    copy), with ``urls_{neg,pos}.txt`` naming each review's movie unless ``movie_urls=False``."""
    rng = np.random.default_rng(seed)
    base = root / "aclImdb"
    for split in ("train", "test"):
        for label, cls in enumerate(("neg", "pos")):
            folder = base / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                rating = int(rng.integers(7, 11)) if label else int(rng.integers(1, 5))
                (folder / f"{i}_{rating}.txt").write_text(fake_review(label, rng), encoding="utf-8")
            if movie_urls:
                urls = "".join(fake_movie(split, i) + "\n" for i in range(n_per_class))
                (base / split / f"urls_{cls}.txt").write_text(urls)
    (base / "README").write_text("fake IMDB for tests\n")
    return base


def tar_directory(source: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


def crafted_tar(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"x") -> Path:
    """A gzipped tar with hand-made members (path escapes, links, devices) after a normal file."""
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("aclImdb/README")
        ok.size = len(payload)
        tar.addfile(ok, io.BytesIO(payload))
        for info in members:
            if info.isfile():
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path


# -- real processes for interruption tests ---------------------------------------------------

# A synthetic task whose epochs last long enough (~1-3 s on 2 cores) to interrupt one mid-way.
SLOW_SYNTHETIC = tiny(n_train=5000, max_len=60, console=True)


def cli_env(root: Path) -> dict[str, str]:
    import os

    env = {**os.environ, "SEQBENCH_ROOT": str(root), "HYDRA_FULL_ERROR": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_console(script: str, args, root: Path, env: dict[str, str], timeout: int = 300):
    """The installed console script ``script`` (``seqbench-train``, ``seqbench-report``, ...)
    with ``args`` in ``root``: its ``CompletedProcess`` (text output captured)."""
    import subprocess
    import sys

    return subprocess.run(
        [str(Path(sys.executable).parent / script), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def search_cmd(*args: str) -> list[str]:
    """``seqbench-train -m hparams_search=optuna ARGS`` as a subprocess command line."""
    import sys

    return [sys.executable, "-m", "seqbench.train", "-m", "hparams_search=optuna", *args]


def start_cli(args: list[str], root: Path, own_group: bool = False):
    """``seqbench-train ARGS`` in the background, output to ``root/launch-N.log``.
    ``own_group``: in its own process group, so a signal sent to the group reaches every rank
    (as SLURM and a terminal's Ctrl-C deliver it) and never the test runner."""
    import subprocess
    import sys

    n = len(list(root.glob("launch-*.log")))
    log = open(root / f"launch-{n}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "seqbench.train", *args],
        cwd=root,
        env=cli_env(root),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_group,
    )


def run_cli_to_end(args: list[str], root: Path, timeout: float = 900):
    proc = start_cli(args, root)
    proc.wait(timeout=timeout)
    return proc.returncode, last_log(root)


def last_log(root: Path) -> str:
    logs = sorted(root.glob("launch-*.log"), key=lambda p: int(p.stem.split("-")[1]))
    return logs[-1].read_text() if logs else ""


def store(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root}/outputs/mlflow/mlflow.db")


def experiment_runs(root: Path, experiment: str) -> list:
    client = store(root)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp is not None else []


def wait_until(condition, proc, timeout: float = 300, what: str = "condition"):
    """Poll ``condition()`` (exceptions count as not yet) while ``proc`` runs; its value."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kill_a_joblib_job(proc, runs, timeout: float = 600):
    """Wait until ``runs()`` (a callable) returns runs, SIGKILL the joblib worker training the
    first one (its ``seqbench.pid`` tag) and wait until the sweep process ``proc`` fails on
    its lost worker; that run, as it was before the kill."""
    import os
    import signal

    try:
        victim = wait_until(runs, proc, timeout=timeout, what="a job to kill")[0]
        pid = int(victim.data.tags["seqbench.pid"])
        assert pid != proc.pid  # a joblib worker, not the sweep process
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=300)  # the sweep notices its lost worker and fails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=120)
    assert proc.returncode != 0
    return victim


def metric_points(root: Path, run_id: str, key: str) -> list:
    return store(root).get_metric_history(run_id, key)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc) -> None:
    """SIGTERM the process group started with ``start_new_session=True``; SIGKILL after 30 s."""
    import os
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_healthy(url: str, proc, log: Path, timeout: float = 120) -> None:
    """Poll ``url`` (a server's /health or /ping) until it answers 200; raise with the end of
    the server's ``log`` if the process exits first or ``timeout`` seconds pass."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still starting
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log.is_file() else ""
            raise RuntimeError(f"server at {url} did not start:\n{tail}")
        time.sleep(0.5)


class MlflowServer:
    """``mlflow server`` (one worker) over ``backend`` (default: a SQLite file in ``root``) with
    its artifacts in ``root``; killed and started again on the same port (tests/test_faults.py,
    benchmarks/faults.py). ``env`` adds to the server's environment."""

    def __init__(self, root: Path, backend: str | None = None, env: dict | None = None) -> None:
        self.root, self.port, self.proc = Path(root), free_port(), None
        self.backend = backend or f"sqlite:///{self.root}/mlflow.db"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.env = env

    def start(self) -> None:
        import os
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "mlflow", "server", "--workers", "1"]
        cmd += ["--backend-store-uri", self.backend]
        cmd += ["--artifacts-destination", str(self.root / "artifacts")]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        log = self.root / "server.log"
        with open(log, "a") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        wait_healthy(self.uri + "/health", self.proc, log, timeout=120)

    def kill(self) -> None:
        import os
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


def postgres_missing() -> str | None:
    """Why a local PostgreSQL cannot be started here (None when it can)."""
    import glob
    import os
    import shutil

    if not (shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")):
        return "PostgreSQL not installed (apt-get install postgresql; CI=true make test does)"
    if shutil.which("psql") is None:
        return "psql not installed (apt-get install postgresql-client)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser missing: PostgreSQL refuses root and needs the postgres user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the PostgreSQL driver is missing: pip install -e '.[postgres]'"
    return None


def postgres_or_skip() -> None:
    """Skip the test when no local PostgreSQL can be started; fail instead under
    SEQBENCH_REQUIRE_POSTGRES=1 (CI installs it)."""
    import os

    import pytest

    if reason := postgres_missing():
        if os.environ.get("SEQBENCH_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (SEQBENCH_REQUIRE_POSTGRES=1): {reason}")
        pytest.skip(reason)


class LocalPostgres:
    """A PostgreSQL cluster in a fresh temporary folder on a free loopback port
    (scripts/postgres_local.sh), stopped and started again on the same port with its data:
    a database restart or failover under a running ``mlflow server``."""

    def __init__(self) -> None:
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="seqbench-pg-"))
        self.folder.chmod(0o755)  # as root, the postgres user owns the cluster below it
        self.port, self.uri = free_port(), ""
        self.script = str(REPO / "scripts" / "postgres_local.sh")

    def start(self) -> str:
        """Start (the first time: create) the cluster; its backend store URI."""
        import subprocess

        done = subprocess.run(
            [self.script, "start", str(self.folder / "pg"), str(self.port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        log = self.folder / "pg" / "postgres.log"
        tail = log.read_text()[-2000:] if log.is_file() else ""
        assert done.returncode == 0, done.stderr + tail
        self.uri = done.stdout.strip()
        return self.uri

    def stop(self) -> None:
        import subprocess

        subprocess.run([self.script, "stop", str(self.folder / "pg")], timeout=60)

    def remove(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class served_process:  # noqa: N801 - used as a context manager, like open()
    """``with served_process(cmd, log, health_path) as base:`` a server started in its own
    process group on a free 127.0.0.1 port (``{port}`` in ``cmd`` is replaced), waited for
    until ``base + health_path`` answers, and stopped on exit, whatever happened."""

    def __init__(self, cmd: list[str], log: Path, health_path: str, env=None, timeout=120):
        self.port = free_port()
        self.cmd = [part.replace("{port}", str(self.port)) for part in cmd]
        self.log, self.health_path, self.env, self.timeout = log, health_path, env, timeout
        self.proc = None

    def __enter__(self) -> str:
        import subprocess

        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{self.port}"
        try:
            wait_healthy(base + self.health_path, self.proc, self.log, self.timeout)
        except BaseException:
            stop_process_group(self.proc)
            raise
        return base

    def __exit__(self, *exc) -> None:
        stop_process_group(self.proc)


def chromium_or_skip() -> str:
    """The headless browser for the UI tests; fails under SEQBENCH_REQUIRE_BROWSER=1 (CI), else
    skips, when it is not installed."""
    import os
    import shutil

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("SEQBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (SEQBENCH_REQUIRE_BROWSER=1) but not installed")
        pytest.skip(
            "chromium not installed (make test installs Debian's chromium when run as root)"
        )
    return browser


def rendered_dom(url: str, profile: Path, budget_ms: int = 30000, window: str | None = None) -> str:
    """The page as headless Chromium renders it with a fresh profile (a first-time visitor),
    after ``budget_ms`` of virtual time for the page's own requests to settle."""
    import subprocess

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += ["--no-first-run", f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
    if window:
        flags.append(f"--window-size={window}")
    done = subprocess.run(
        [chromium_or_skip(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180
    )
    return done.stdout


# -- what happened inside a real training run --------------------------------------------------


def probe_autocast(cfg: DictConfig, path: Path) -> DictConfig:
    """Add an ``AutocastProbe`` writing to ``path`` to ``cfg``'s callbacks (in place)."""
    with open_dict(cfg):
        cfg.callbacks.autocast_probe = {"_target_": "helpers.AutocastProbe", "path": str(path)}
    return cfg


class AutocastProbe(Callback):
    """For every training forward pass of the network (``pl_module.net``), whether CPU autocast
    was on and the logits' dtype, written as JSON to ``path`` when fitting ends: a
    mixed-precision run's logged precision alone does not show that autocast ran. The hook runs
    in the thread that calls the network, so batch slices' worker threads are seen too."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.passes: list[dict] = []
        self._hook = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._hook = pl_module.net.register_forward_hook(self._record)

    def _record(self, module, args, output) -> None:
        if module.training and torch.is_grad_enabled():
            autocast = torch.is_autocast_enabled("cpu")
            self.passes.append({"autocast": autocast, "dtype": str(output.dtype)})

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        self._hook.remove()
        self.path.write_text(json.dumps(self.passes))


def _main_exit_code(args: list[str]) -> int:
    """``seqbench-train ARGS`` through the real Hydra entry point in this process: its exit
    status (0 when ``main`` returns)."""
    import sys

    import pytest
    from hydra.core.global_hydra import GlobalHydra

    from seqbench.train import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["seqbench-train", *args])
        try:
            main()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        finally:
            GlobalHydra.instance().clear()
    return 0


def run_main(root: Path, args: list[str], monkeypatch, capfd) -> tuple[int, str]:
    """``seqbench-train ARGS`` through the real Hydra entry point in this process, with
    ``root`` as the project root: (exit status, stdout + stderr)."""
    monkeypatch.setenv("SEQBENCH_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = _main_exit_code(args)
    out, err = capfd.readouterr()
    return code, out + err


def train_in_process(root: Path, args: list[str]) -> None:
    """``seqbench-train ARGS`` (one run, or a multirun on Hydra's basic launcher, which runs
    its jobs one after another in the launching process) in this process, with ``root`` as the
    project root; fails unless it exits 0. For tests and fixtures of any scope whose subject is
    what the runs leave in the store, not the process: a ``seqbench-train`` process costs ~12
    CPU-seconds of imports before its first step. ``SEQBENCH_ROOT``, the working directory and
    MLflow's global store are restored afterwards."""
    import pytest

    from seqbench.serving.mlflow_model import use_store

    store = f"sqlite:///{root}/outputs/mlflow/mlflow.db"
    with pytest.MonkeyPatch.context() as patch, use_store(store):
        patch.setenv("SEQBENCH_ROOT", str(root))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)  # where the console tests start it
        code = _main_exit_code(args)
    assert code == 0, f"seqbench-train {' '.join(args)} exited {code} (its log is under {root})"
