"""Time loading aeon's bundled UCR/UEA data sets through ``data=ucr``, first read and from the
prepared-data cache (issue 17: the largest bundled set from cache in under 2 s), for
docs/benchmarks.md.

    .venv/bin/python benchmarks/series_load.py                 # every bundled data set
    .venv/bin/python benchmarks/series_load.py --names ACSF1 --repeats 5

Each data set: one ``setup_datamodule`` (prepare + setup, as ``seqbench-train`` does) on an empty
cache (reads the ``.ts`` files with aeon, checks, imputes, normalises, writes the cache), then
``--repeats`` more on fresh DataModules, which read only the cache. Times are in process, after
the imports and the config's composition (about 0.4 s of Hydra, the same for both). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", help="comma-separated data set names (default: all bundled)")
    parser.add_argument("--repeats", type=int, default=3, help="cached loads per data set")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="series-load-"))
    os.environ["SEQBENCH_ROOT"] = str(root)  # the cache lives under root/outputs/data
    import seqbench
    from seqbench.data.ucr import bundled_dir, bundled_names
    from seqbench.job import setup_datamodule

    names = args.names.split(",") if args.names else bundled_names()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; cache in {root}")
    print("| data set | .ts size (MB) | series (train/test) | first load (s) | cached load (s) |")
    print("| --- | --: | --: | --: | --: |")
    try:
        for name in names:
            size = sum(f.stat().st_size for f in (bundled_dir() / name).glob("*.ts")) / 1e6
            cfg = seqbench.compose(["data=ucr", f"data.name={name}"], root=root)
            start = time.perf_counter()
            dm = setup_datamodule(cfg)
            first = time.perf_counter() - start
            cached = []
            for _ in range(args.repeats):
                again = seqbench.compose(["data=ucr", f"data.name={name}"], root=root)
                start = time.perf_counter()
                setup_datamodule(again)
                cached.append(time.perf_counter() - start)
            n_train, n_test = len(dm.corpus.train), len(dm.corpus.test)
            print(
                f"| {name} | {size:.1f} | {n_train}/{n_test} | {first:.2f} | "
                f"{statistics.median(cached):.2f} (max {max(cached):.2f}) |"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
