"""Faults in the middle of a run (issue 19): what each one costs, on real processes and a real
``mlflow server``.

    python benchmarks/faults.py [--outage-seconds 300] [--only ROW ...] [--out FILE]

Every row trains the tiny ``data=synthetic`` run of tests/test_faults.py (30 epochs, each made
longer by a sleep so that the run spans the fault) with ``seqbench-train`` as a process against
``mlflow server`` on SQLite (the PostgreSQL row: on a local PostgreSQL, skipped without one),
with MLflow's default HTTP retry settings, injects one fault, launches the same command again
where the fault calls for it, and reads the result back from the server:

- points lost: the 30 expected ``val/acc`` points minus the distinct steps in the store;
- jobs retrained: runs in the store beyond one per job (a job trained again from scratch);
- time lost: the wall time of the faulted launches minus that of one fault-free launch of the
  same config on the same server (process time: the minutes nobody runs anything, waiting for
  the server before a relaunch, are not counted).

The launch, fault and read-back helpers are the tests' own (tests/helpers.py, tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from mlflow import MlflowClient  # noqa: E402

from helpers import LocalPostgres, MlflowServer, cli_env, postgres_missing, wait_until  # noqa: E402
from test_faults import (  # noqa: E402
    FileSizeLimit,
    Outage,
    checkpoint_epoch,
    launch,
    launch_log,
    outage_run,
    val_points,
)
from test_upgrade_keys import NEUTRAL, NEW_KEY, NEW_OVERRIDE, SWEEP  # noqa: E402

EPOCHS = 30  # outage_run's and every row's
KILL_EPOCH = 10  # SIGKILL once this many epochs have their val/acc point in the store
# The write failure strikes when this epoch (1-based) saves; it must be one whose val/acc
# improves: since Lightning 2.6 `save_last` refreshes last.ckpt only in such epochs (in this
# seeded run val/acc improves at epochs 1, 2, 6 and 8, then stays at 1.0).
WRITE_FAILURE_EPOCH = 6
# The newer seqbench of tests/test_upgrade_keys.py: the new key's neutral default registered.
NEWER = (
    "import sys; from seqbench.run import jobs; jobs.NEUTRAL_DEFAULTS[{key!r}] = {value!r}; "
    "from seqbench.train import main; sys.argv[0] = 'seqbench-train'; main()"
)


@dataclass
class Row:
    fault: str
    seen: str
    points_lost: int | str
    retrained: int | str
    time_lost: float


class Bench:
    """The shared server, fault-free baselines, and one fresh project folder per launch set."""

    def __init__(self, folder: Path, outage_s: float) -> None:
        self.folder, self.outage_s = folder, outage_s
        self.server = MlflowServer(self._root("server"))
        self.server.start()
        self.baselines: dict[tuple[str, float], float] = {}  # (store kind, sleep): seconds

    def _root(self, name: str) -> Path:
        root = self.folder / f"{name}-{uuid4().hex[:6]}"
        root.mkdir(parents=True)
        return root

    def project(self, name: str) -> tuple[Path, str]:
        """A fresh project root and experiment name."""
        return self._root(name), f"faults-{name}-{uuid4().hex[:6]}"

    def baseline(self, server: MlflowServer, sleep: float) -> float:
        """Wall seconds of one fault-free launch with ``sleep`` per epoch on ``server``."""
        key = (server.backend.split(":")[0], sleep)  # sqlite or postgresql
        if key not in self.baselines:
            root, experiment = self.project("baseline")
            self.baselines[key] = timed(root, server.uri, experiment, sleep=sleep)[1]
            _, points = val_points(server.uri, experiment)
            assert len({p.step for p in points}) == EPOCHS, "the baseline itself lost points"
        return self.baselines[key]

    def close(self) -> None:
        self.server.stop()


def timed(root: Path, uri: str, experiment: str, *overrides: str, **options) -> tuple[int, float]:
    """One ``launch`` of 30 epochs with MLflow's default retries, waited for: (exit, seconds)."""
    started = time.monotonic()
    proc = launch(
        root, uri, experiment, f"trainer.max_epochs={EPOCHS}", *overrides, retries=None, **options
    )
    return proc.wait(), time.monotonic() - started


def store_result(uri: str, experiment: str, jobs: int = 1) -> tuple[list, int, int, int]:
    """(runs, points lost, jobs retrained, duplicate points) of a one-job experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    steps = [p.step for r in runs for p in client.get_metric_history(r.info.run_id, "val/acc")]
    return runs, EPOCHS - len(set(steps)), len(runs) - jobs, len(steps) - len(set(steps))


def _statuses(runs: list) -> str:
    return ", ".join(sorted(r.info.status for r in runs)) or "no run"


def _duplicates(count: int) -> str:
    return f"; {count} duplicate points" if count else ""


def _back_after(text: str) -> str:
    found = re.findall(r"is back after (\d+) s; (\d+) queued records delivered", text)
    return (
        f"'back after {found[-1][0]} s, {found[-1][1]} queued records delivered'" if found else ""
    )


def outage(bench: Bench) -> Row:
    """The server killed for ``--outage-seconds`` (default 300) mid-run, MLflow's defaults."""
    root, experiment = bench.project("outage")
    sleep = max(1.0, bench.outage_s / 25)  # 27 epochs after the fault outlast the outage
    server = bench.server
    result = outage_run(
        root,
        server.uri,
        experiment,
        server.kill,
        server.start,
        bench.outage_s,
        retries=None,
        sleep=sleep,
    )
    fault = (
        f"tracking server down {bench.outage_s:.0f} s mid-run (MLflow's default retries; "
        f"epochs of {sleep:.0f} s + training)"
    )
    return _outage_row(fault, root, server.uri, experiment, result, bench.baseline(server, sleep))


def _outage_row(
    fault: str, root: Path, uri: str, experiment: str, result: Outage, baseline: float
) -> Row:
    """What an outage run showed: its exit, the store, and the log's warnings (the heartbeat's
    every few seconds; the outbox's once MLflow's own retries gave up, then 'back after')."""
    runs, lost, retrained, dups = store_result(uri, experiment)
    text = launch_log(root, 0)
    beats = re.findall(r"unreachable for (\d+) s, (\d+) records queued; training continues", text)
    seen = f"exit {result.proc.returncode}, one run {_statuses(runs)}; heartbeat: " + (
        f"'unreachable for N s, M records queued; training continues' up to "
        f"N={max(int(n) for n, _ in beats)}, M={max(int(m) for _, m in beats)}"
        if beats
        else "no warning"
    )
    if cause := re.search(r"unreachable \(([^\n]*?)\); training continues", text):
        seen += f"; outbox: 'unreachable ({_short(cause.group(1))})'"
    seen += f"; {_back_after(text)}" if _back_after(text) else ""
    return Row(fault, seen + _duplicates(dups), lost, retrained, result.wall_s - baseline)


def outage_limit(bench: Bench) -> Row:
    """The server down past ``logger.outage_limit_s=20``: exit 75, relaunch once it is back."""
    root, experiment = bench.project("limit")
    server, limit, down_s = bench.server, 20, 60
    started = time.monotonic()
    proc = launch(
        root,
        server.uri,
        experiment,
        f"trainer.max_epochs={EPOCHS}",
        f"logger.outage_limit_s={limit}",
        retries=None,
    )
    try:
        wait_until(lambda: checkpoint_epoch(root) >= 2, proc, 600, "3 epochs")
        server.kill()
        down = time.monotonic()
        first = proc.wait(timeout=down_s + 600)
        wall = time.monotonic() - started
        time.sleep(max(0.0, down_s - (time.monotonic() - down)))
    finally:
        if proc.poll() is None:
            proc.kill()
        server.start()
    second, wall2 = timed(root, server.uri, experiment, f"logger.outage_limit_s={limit}")
    runs, lost, retrained, dups = store_result(server.uri, experiment)
    said = "has been unreachable for" in launch_log(root, 0)
    seen = (
        f"exit {first} after {wall:.0f} s ('... has been unreachable for N s (logger.outage_limit_s="
        f"{limit}) ... Run the same command again': {'yes' if said else 'NO'}); relaunch after "
        f"{down_s} s down: exit {second}, same run {_statuses(runs)}, resume_count "
        f"{runs[0].data.tags.get('seqbench.resume_count') if runs else '-'}{_duplicates(dups)}"
    )
    return Row(
        f"tracking server down {down_s} s, past logger.outage_limit_s={limit}; relaunched",
        seen,
        lost,
        retrained,
        wall + wall2 - bench.baseline(server, 1.0),
    )


def postgres(bench: Bench) -> Row | None:
    """PostgreSQL stopped for 20 s and started again under a running ``mlflow server``."""
    if reason := postgres_missing():
        print(f"postgres row left out: {reason}", file=sys.stderr)
        return None
    database = LocalPostgres()
    server = None
    try:
        server = MlflowServer(bench._root("pg-server"), backend=database.start())
        server.start()
        root, experiment = bench.project("postgres")
        result = outage_run(
            root, server.uri, experiment, database.stop, database.start, 20, retries=None
        )
        fault = "PostgreSQL restarted (20 s down) under a running mlflow server"
        return _outage_row(fault, root, server.uri, experiment, result, bench.baseline(server, 1.0))
    finally:
        if server is not None:
            server.stop()
        database.remove()


def _crash_and_relaunch(
    bench: Bench, name: str, before_relaunch: Callable[[Path], None], *overrides: str
) -> tuple[Path, str, list[int], float]:
    """Launch, SIGKILL once ``KILL_EPOCH`` epochs are in the store (plus a moment: in the
    next epoch), ``before_relaunch(root)``, launch the same command again: (root, experiment,
    exit codes, wall seconds of both launches)."""
    root, experiment = bench.project(name)
    started = time.monotonic()
    proc = launch(
        root, bench.server.uri, experiment, f"trainer.max_epochs={EPOCHS}", *overrides, retries=None
    )
    try:
        logged = lambda: len(val_points(bench.server.uri, experiment)[1]) >= KILL_EPOCH  # noqa: E731
        wait_until(logged, proc, 600, f"{KILL_EPOCH} epochs")
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        first = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.monotonic() - started
    before_relaunch(root)
    second, wall2 = timed(root, bench.server.uri, experiment, *overrides)
    return root, experiment, [first, second], wall + wall2


def _truncate(root: Path) -> None:
    (last,) = root.glob("outputs/**/checkpoints/last.ckpt")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])


def _killed(bench: Bench, name: str, fault: str, truncate: bool) -> Row:
    before = _truncate if truncate else (lambda root: None)
    root, experiment, codes, wall = _crash_and_relaunch(bench, name, before)
    runs, lost, retrained, dups = store_result(bench.server.uri, experiment)
    resumed = runs[0].data.tags.get("seqbench.resumed_from_step", "-") if runs else "-"
    warned = [line for line in launch_log(root, 1).splitlines() if "unreadable" in line]
    said = f"one line '{_short(warned[0])}', " if warned else ""
    seen = (
        f"exit {codes[0]} (killed); relaunch: {said}exit {codes[1]}, the same run "
        f"{_statuses(runs)}, resumed from step {resumed}{_duplicates(dups)}"
    )
    return Row(fault, seen, lost, retrained, wall - bench.baseline(bench.server, 1.0))


def sigkill(bench: Bench) -> Row:
    fault = f"SIGKILL in epoch {KILL_EPOCH + 1}, same command again"
    return _killed(bench, "sigkill", fault, truncate=False)


def truncated(bench: Bench) -> Row:
    fault = f"SIGKILL in epoch {KILL_EPOCH + 1}, then last.ckpt cut to half its size"
    return _killed(bench, "truncated", fault, truncate=True)


def _short(line: str) -> str:
    """A log line without its logging prefix and temporary folders, cut to 160 characters."""
    line = re.sub(r"^\[[^]]*\]\[[^]]*\]\[\w+\] - ", "", line)
    return re.sub(r"/\S*/(checkpoints|outbox)/", r".../\1/", line)[:160]


def write_failure(bench: Bench) -> Row:
    """No file may grow past 256 KiB (RLIMIT_FSIZE, a full disk) when the checkpoints of epoch
    ``WRITE_FAILURE_EPOCH`` are written (one is ~680 KB, the logs ~10 KB); the same command
    again."""
    root, experiment = bench.project("diskfull")
    target = f"{FileSizeLimit.__module__}.FileSizeLimit"
    overrides = (
        f"+callbacks.disk_full._target_={target}",
        f"+callbacks.disk_full.epoch={WRITE_FAILURE_EPOCH - 1}",
        f"+callbacks.disk_full.limit={256 * 1024}",
        f"+callbacks.disk_full.marker={root / 'disk-full-once'}",
    )
    first, wall = timed(root, bench.server.uri, experiment, *overrides)
    failed, *_ = store_result(bench.server.uri, experiment)
    reason = failed[0].data.tags.get("seqbench.failure_reason", "-") if failed else "-"
    status = _statuses(failed)
    second, wall2 = timed(root, bench.server.uri, experiment, *overrides)
    runs, lost, retrained, dups = store_result(bench.server.uri, experiment)
    seen = (
        f"exit {first}, run {status} with reason '{reason}', previous last.ckpt kept; "
        f"relaunch: exit {second}, the same run {_statuses(runs)}{_duplicates(dups)}"
    )
    return Row(
        f"checkpoint write fails (file size limit) at epoch {WRITE_FAILURE_EPOCH}",
        seen,
        lost,
        retrained,
        wall + wall2 - bench.baseline(bench.server, 1.0),
    )


def upgrade(bench: Bench) -> Row:
    """A finished 2-job sweep relaunched by a seqbench that adds a config key (at its neutral
    default, as tests/test_upgrade_keys.py simulates it), against the same relaunch without it."""
    root, experiment = bench.project("upgrade")
    args = [a for a in SWEEP if not a.startswith("logger.experiment_name=")]
    args += [f"logger.experiment_name={experiment}", f"logger.tracking_uri={bench.server.uri}"]

    def sweep(*command: str) -> tuple[str, float]:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, *command],
            cwd=root,
            env=cli_env(root),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout + done.stderr, time.monotonic() - started

    def points() -> int:
        client = MlflowClient(bench.server.uri)
        runs = store_result(bench.server.uri, experiment, jobs=2)[0]
        return sum(len(client.get_metric_history(r.info.run_id, "val/acc")) for r in runs)

    sweep("-m", "seqbench.train", *args)
    before, points_before = store_result(bench.server.uri, experiment, jobs=2)[0], points()
    _, same = sweep("-m", "seqbench.train", *args)  # the same code again: every job skipped
    text, newer = sweep("-c", NEWER.format(key=NEW_KEY, value=NEUTRAL), *args, NEW_OVERRIDE)
    runs = store_result(bench.server.uri, experiment, jobs=2)[0]
    skipped = text.count("finished earlier as MLflow run")
    seen = (
        f"relaunch of a finished 2-job sweep with `{NEW_OVERRIDE}`: {skipped} of 2 jobs "
        f"'finished earlier as MLflow run', skipped; {_statuses(runs)}"
    )
    return Row(
        "upgrade adds a config key (neutral default); finished sweep relaunched (time lost: "
        "against the same relaunch on the old code)",
        seen,
        points_before - points(),
        len(runs) - len(before),
        newer - same,
    )


ROWS: dict[str, Callable[[Bench], Row | None]] = {  # the short rows first
    "upgrade": upgrade,
    "write-failure": write_failure,
    "truncated": truncated,
    "sigkill": sigkill,
    "outage-limit": outage_limit,
    "postgres": postgres,
    "outage": outage,
}


def render(rows: list[Row]) -> str:
    lines = [
        "| fault | what the user sees | points lost | jobs retrained | time lost (s) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.fault} | {row.seen} | {row.points_lost} | {row.retrained} | {row.time_lost:+.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-seconds", type=float, default=300.0)
    parser.add_argument("--only", action="append", choices=sorted(ROWS), help="a row (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="seqbench-faults-"))
    started, load = time.monotonic(), os.getloadavg()
    bench = Bench(folder, args.outage_seconds)
    rows: list[Row] = []
    try:
        for name in args.only or list(ROWS):
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
            try:
                row = ROWS[name](bench)
            except Exception:  # one broken row must not cost the others' figures
                traceback.print_exc()
                print(f"row {name} left out: it raised (above)", file=sys.stderr, flush=True)
                continue
            if row is not None:
                rows.append(row)
                print(render([row]).splitlines()[-1], file=sys.stderr, flush=True)
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    table = render(rows)
    baselines = ", ".join(
        f"{s:.0f} s ({store}, {sleep:g} s sleep)" for (store, sleep), s in bench.baselines.items()
    )
    note = (
        f"\n\n{len(rows)} rows in {time.monotonic() - started:.0f} s; load average at the start "
        f"{load[0]:.1f}, at the end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs); "
        f"fault-free baselines: {baselines or 'none'}"
    )
    print(table + note)
    if args.out:
        args.out.write_text(table + note + "\n")


if __name__ == "__main__":
    main()
