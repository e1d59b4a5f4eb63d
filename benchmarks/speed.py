"""Speed benchmark: seqbench vs a plain PyTorch loop vs the seed's Keras model, side by side.

    python benchmarks/speed.py --archive ../shared/data/aclImdb_v1-labeled.tar.gz --seeds 1,2,3
    python benchmarks/speed.py --archive ... --only archs --steps 60

One invocation runs every measurement in its own subprocess (so peak memory is per path and
imports never count as training), on the same prepared data: the cached encoded corpus, the
same training split and, for seqbench and the plain loop, the very same batches. Keras runs
under ``--keras-python`` (default ``benchmarks/.venv-keras/bin/python``; see docs/benchmarks.md)
when that interpreter exists, on the same training split padded to 500 as the seeds do.
Results print as Markdown tables and are written as JSON to ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "bilstm", "cnn_lstm", "stacked_lstm"]
PADDED = ["data.bucketing=false", "data.padding=pre"]
ARCH_MODES = {  # overrides of each per-architecture column
    "fast": [],
    "padded_500": PADDED,
    "padded_500_fp32": [*PADDED, "trainer.precision=32-true", "batch_split=1"],
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compose(overrides: list[str], tmp: Path):
    """The real seqbench config, writing into ``tmp`` (data cache: the project's outputs/data)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from seqbench.config.paths import config_dir, register_resolvers

    register_resolvers()
    base = [
        f"paths.output_dir={tmp}/run",
        f"logger.tracking_uri=sqlite:///{tmp}/mlflow.db",
        f"logger.artifact_location={tmp}/artifacts",
        "callbacks.progress_bar.refresh_rate=0",
        "trainer.enable_model_summary=false",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=base + overrides)


def data_overrides(args) -> list[str]:
    subset = [f"data.subset={args.subset}"] if args.subset else []
    return [f"data.archive={Path(args.archive).resolve()}", f"num_threads={args.threads}", *subset]


# ----------------------------------------------------------------------------- child: seqbench
def child_seqbench(args) -> dict:
    from mlflow import MlflowClient

    from seqbench.train import train

    tmp = Path(tempfile.mkdtemp(prefix="seqbench-bench-"))
    cfg = compose(
        [
            *data_overrides(args),
            f"seed={args.seed}",
            f"trainer.max_epochs={args.epochs}",
            "model=lstm",
        ],
        tmp,
    )
    result = train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    tags = client.get_run(result.run_id).data.tags

    def history(name: str) -> list[float]:
        return [m.value for m in client.get_metric_history(result.run_id, name)]

    return {
        "mode": "seqbench",
        "seed": args.seed,
        "precision": str(cfg.trainer.precision),
        "batch_split": int(tags["batch_split"]),
        "epoch_seconds": history("perf/epoch_seconds"),
        "fit_seconds": result.metrics["perf/fit_seconds"],
        "test_acc": result.metrics["test/acc"],
        "val_acc": history("val/acc"),
        "start_to_first_step": history("perf/start_to_first_step_seconds")[0],
        "tokens": None,
        "peak_rss_mb": peak_rss_mb(),
    }


# ----------------------------------------------------------------------------- child: plain loop
def build_datamodule(args, overrides: list[str]):
    from hydra.utils import instantiate

    tmp = Path(tempfile.mkdtemp(prefix="seqbench-bench-"))
    cfg = compose([*data_overrides(args), *overrides], tmp)
    dm = instantiate(cfg.data)
    dm.sampler_seed = args.seed
    dm.setup()
    return cfg, dm


def execution(cfg):
    """Run a model as seqbench-train would for ``cfg``: its threads, denormal flushing, batch
    slices (seqbench.training.parallel) and autocast; returns (call(net, tokens, lengths), autocast)."""
    import torch

    from seqbench.training.cpu import configure_cpu
    from seqbench.training.parallel import BatchSplitter

    plan = configure_cpu(cfg)
    splitter = BatchSplitter(plan.batch_split, bool(cfg.flush_denormal))
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(
        str(cfg.trainer.precision)
    )

    def autocast():
        return torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    return splitter, autocast, plan


def child_plain(args) -> dict:
    """The same model and batches in a hand-written loop: the harness-free reference."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    cfg, dm = build_datamodule(args, ["model=lstm", f"seed={args.seed}"])
    L.seed_everything(args.seed, verbose=False)
    call, autocast, plan = execution(cfg)
    net = instantiate(cfg.model.net)
    optimizer = instantiate(cfg.model.optimizer)(net.parameters())
    loader = dm.train_dataloader()
    times, tokens = [], 0
    for epoch in range(args.epochs):
        loader.batch_sampler.set_epoch(epoch)
        net.train()
        start = time.perf_counter()
        for batch in loader:
            train_step(call, autocast, net, optimizer, batch)
            tokens += int(batch[1].sum())
        times.append(time.perf_counter() - start)
    net.eval()
    correct = total = 0
    with torch.no_grad(), autocast():
        for batch_tokens, lengths, labels in dm.test_dataloader():
            correct += int(((call(net, batch_tokens, lengths) > 0).long() == labels).sum())
            total += len(labels)
    return {
        "mode": "plain",
        "seed": args.seed,
        "precision": str(cfg.trainer.precision),
        "batch_split": plan.batch_split,
        "epoch_seconds": times,
        "fit_seconds": sum(times),
        "test_acc": correct / total,
        "tokens": tokens,
        "peak_rss_mb": peak_rss_mb(),
    }


def train_step(call, autocast, net, optimizer, batch) -> None:
    import torch.nn.functional as F

    batch_tokens, lengths, labels = batch
    with autocast():
        logits = call(net, batch_tokens, lengths)
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# ----------------------------------------------------------------------------- child: per-architecture steps
def child_archs(args) -> dict:
    """Seconds per training step of each architecture, scaled to a full epoch (steps drawn from
    the real shuffled batch order): the default fast path; padded to 500 with the same execution
    (bucketing's share); padded to 500 in float32 on intra-op threads only (the seeds' way)."""
    import itertools

    import lightning as L
    from hydra.utils import instantiate

    rows = []
    for arch in ARCHS:
        for mode, overrides in ARCH_MODES.items():
            cfg, dm = build_datamodule(args, [f"model={arch}", *overrides])
            L.seed_everything(args.seed, verbose=False)
            call, autocast, _ = execution(cfg)
            net = instantiate(cfg.model.net).train()
            optimizer = instantiate(cfg.model.optimizer)(net.parameters())
            loader = dm.train_dataloader()
            batches = list(itertools.islice(iter(loader), args.steps + 2))
            for batch in batches[:2]:  # warm-up (allocator, oneDNN primitives)
                train_step(call, autocast, net, optimizer, batch)
            start = time.perf_counter()
            for batch in batches[2:]:
                train_step(call, autocast, net, optimizer, batch)
            per_step = (time.perf_counter() - start) / len(batches[2:])
            call.close()
            rows.append(
                {
                    "arch": arch,
                    "mode": mode,
                    "step_seconds": per_step,
                    "epoch_seconds_est": per_step * len(loader),
                    "steps_per_epoch": len(loader),
                }
            )
            print(
                f"  {arch:24s} {mode:14s} {per_step * len(loader):7.1f} s/epoch (est.)",
                file=sys.stderr,
            )
    return {"mode": "archs", "rows": rows, "peak_rss_mb": peak_rss_mb()}


# ----------------------------------------------------------------------------- parent
def export_keras_arrays(args, path: Path) -> None:
    """The seqbench training split and the test set, padded/truncated *pre* to 500 as the seeds."""
    import numpy as np

    from seqbench.data.text import pad

    _, dm = build_datamodule(args, ["model=lstm"])
    train, test = dm.splits["train"], dm.splits["test"]
    np.savez(
        path,
        x_train=pad([train.sequence(i) for i in range(len(train))], 500, "pre").astype("int32"),
        y_train=train.labels.astype("float32"),
        x_test=pad([test.sequence(i) for i in range(len(test))], 500, "pre").astype("int32"),
        y_test=test.labels.astype("float32"),
    )


def run_child(cmd: list[str]) -> dict:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"benchmark step failed ({done.returncode}): {' '.join(cmd)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def machine() -> str:
    import platform

    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as fh:
        cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} usable cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def report(results: list[dict], args) -> str:
    from tabulate import tabulate

    lines = [
        f"Machine: {machine()}",
        f"Command: python benchmarks/speed.py {' '.join(sys.argv[1:])}",
        "",
    ]
    by_mode: dict[str, list[dict]] = {}
    for r in results:
        by_mode.setdefault(r["mode"], []).append(r)
    rows = []
    for mode in ("seqbench", "plain", "keras"):
        runs = by_mode.get(mode, [])
        if not runs:
            continue
        fit = mean(r["fit_seconds"] for r in runs)
        epoch = mean(s for r in runs for s in r["epoch_seconds"])
        tokens = runs[0].get("tokens")
        rows.append(
            [
                mode,
                len(runs),
                f"{fit:.1f}",
                f"{epoch:.1f}",
                f"{tokens / sum(runs[0]['epoch_seconds']):,.0f}" if tokens else "",
                "{:.2f} ({})".format(
                    100 * mean(r["test_acc"] for r in runs),
                    ", ".join(f"{100 * r['test_acc']:.2f}" for r in runs),
                ),
                f"{max(r['peak_rss_mb'] for r in runs):,.0f}",
            ]
        )
    if rows:
        lines.append(
            tabulate(
                rows,
                headers=[
                    "path",
                    "seeds",
                    f"{args.epochs}-epoch train wall s",
                    "s/epoch (steps)",
                    "tokens/s",
                    "test acc % mean (per seed)",
                    "peak RSS MB",
                ],
                tablefmt="github",
            )
        )
    ratios = []
    if "seqbench" in by_mode and "keras" in by_mode:
        ratios.append(
            (
                "Keras fit / seqbench fit wall time",
                mean(r["fit_seconds"] for r in by_mode["keras"])
                / mean(r["fit_seconds"] for r in by_mode["seqbench"]),
            )
        )
    if "seqbench" in by_mode and "plain" in by_mode:
        sb = mean(s for r in by_mode["seqbench"] for s in r["epoch_seconds"])
        pl = mean(s for r in by_mode["plain"] for s in r["epoch_seconds"])
        ratios.append(("harness overhead (seqbench s/epoch / plain s/epoch - 1)", sb / pl - 1))
    if "seqbench" in by_mode:
        ratios.append(
            (
                "start to first training step, s (warm cache)",
                mean(r["start_to_first_step"] for r in by_mode["seqbench"]),
            )
        )
    for mode in ("seqbench", "plain"):
        if runs := by_mode.get(mode):
            lines.append(
                f"{mode} ran with precision {runs[0]['precision']} and"
                f" {runs[0]['batch_split']} batch slice(s) in parallel threads"
            )
    if ratios:
        lines += [
            "",
            tabulate(
                [[k, f"{v:.3f}"] for k, v in ratios], headers=["figure", "value"], tablefmt="github"
            ),
        ]
    for r in by_mode.get("archs", []):
        table = {}
        for row in r["rows"]:
            table.setdefault(row["arch"], {})[row["mode"]] = row["epoch_seconds_est"]
        lines += [
            "",
            f"Per-architecture s/epoch, estimated from {args.steps} training steps each:",
            "",
        ]
        lines.append(
            tabulate(
                [
                    [
                        a,
                        f"{m['fast']:.1f}",
                        f"{m['padded_500']:.1f}",
                        f"{m['padded_500_fp32']:.1f}",
                        f"{m['padded_500'] / m['fast']:.2f}x",
                        f"{m['padded_500_fp32'] / m['fast']:.2f}x",
                    ]
                    for a, m in table.items()
                ],
                headers=[
                    "architecture",
                    "fast path (default)",
                    "padded to 500",
                    "padded to 500, fp32, unsplit",
                    "bucketing speed-up",
                    "total speed-up",
                ],
                tablefmt="github",
            )
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--archive", required=True, help="IMDB .tar.gz or extracted aclImdb/ directory"
    )
    parser.add_argument("--seeds", default="1", help="comma-separated seeds for the 3-epoch runs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--steps", type=int, default=60, help="training steps per architecture and mode"
    )
    parser.add_argument(
        "--subset", type=int, default=0, help="stratified N train/test reviews (smoke runs)"
    )
    parser.add_argument(
        "--only", default="seqbench,plain,keras,archs", help="which measurements to run"
    )
    parser.add_argument(
        "--keras-python", default=str(ROOT / "benchmarks" / ".venv-keras" / "bin" / "python")
    )
    parser.add_argument("--json", default=None, help="write all results here as JSON")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = {"seqbench": child_seqbench, "plain": child_plain, "archs": child_archs}[
            args.child
        ](args)
        print(json.dumps(result))
        return

    only = set(args.only.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    common = [
        sys.executable,
        __file__,
        "--archive",
        args.archive,
        "--epochs",
        str(args.epochs),
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--subset",
        str(args.subset),
    ]
    results = []
    build_datamodule(args, ["model=lstm"])  # prepares and caches the encoded data once, up front
    keras_ready = "keras" in only and Path(args.keras_python).exists()
    if "keras" in only and not keras_ready:
        print(
            f"skipping Keras: {args.keras_python} not found (see docs/benchmarks.md)",
            file=sys.stderr,
        )
    arrays = Path(tempfile.mkdtemp(prefix="seqbench-keras-")) / "arrays.npz"
    if keras_ready:
        export_keras_arrays(args, arrays)
    for seed in seeds:
        for mode in ("seqbench", "plain"):
            if mode in only:
                results.append(run_child([*common, "--child", mode, "--seed", str(seed)]))
        if keras_ready:
            results.append(
                run_child(
                    [
                        args.keras_python,
                        str(ROOT / "benchmarks" / "keras_seed.py"),
                        "--arrays",
                        str(arrays),
                        "--epochs",
                        str(args.epochs),
                        "--seed",
                        str(seed),
                        "--threads",
                        str(args.threads),
                    ]
                )
            )
    if "archs" in only:
        results.append(run_child([*common, "--child", "archs", "--seed", str(seeds[0])]))
    text = report(results, args)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "report": text}, indent=2))


if __name__ == "__main__":
    main()
