"""Time and peak memory to read, check and encode a big generated CSV with ``data=text_files``,
then the second run's cache hit (docs/benchmarks.md).

    python benchmarks/text_files.py --rows 1000000 --json outputs/benchmarks/text_files.json

Each measurement runs in a fresh Python process (``--child``), so its peak RSS
(``ru_maxrss``) is that of one ``TextFilesDataModule.setup()``: imports, the pyarrow read, label
checks, the vectorised encoder, the stratified splits and the cache write (or, on the second
run, hashing the file and loading the cache).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(path: Path, rows: int, seed: int = 0, classes: int = 5) -> Path:
    """``rows`` texts of 10-50 Zipf-distributed words from a 30,000-word vocabulary, with a few
    class cue words each, some commas and quotes (so fields are quoted), string labels."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(30_000)])
    cues = [np.array([f"cue{c}x{k}" for k in range(20)]) for c in range(classes)]
    names = [f"class_{c}" for c in range(classes)]
    lengths = rng.integers(10, 51, size=rows)
    ranks = (rng.zipf(1.2, size=int(lengths.sum())) - 1) % len(words)
    flat = words[ranks]
    labels = rng.integers(0, classes, size=rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8", newline="") as fh:
        fh.write("text,label\n")
        for i in range(rows):
            body = flat[offsets[i] : offsets[i + 1]].tolist()
            for k in range(0, len(body), 7):  # a cue word every 7 words
                body[k] = cues[labels[i]][(i + k) % 20]
            text = " ".join(body)
            if i % 10 == 0:
                text = f'"{text}, ""quoted"""'
            fh.write(f"{text},{names[labels[i]]}\n")
    partial.replace(path)
    return path


def child(train: str, cache_dir: str, tokenizer: str) -> None:
    """One setup() in this process; prints a JSON line with seconds, peak RSS and sizes."""
    started = time.perf_counter()
    from seqbench.data.text_files import TextFilesDataModule

    imported = time.perf_counter()
    dm = TextFilesDataModule(
        train=train, cache_dir=cache_dir, tokenizer=tokenizer, vocab_size=20_000, max_len=500
    )
    dm.setup()
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "seconds": round(done - imported, 2),
                "seconds_with_imports": round(done - started, 2),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
                "cache_hit": bool(dm.corpus.meta.get("cache_hit")),
                "rows": {k: len(v) for k, v in dm.splits.items()},
                "tokens": int(sum(len(v.tokens) for v in dm.splits.values())),
                "classes": dm.label_names,
            }
        )
    )


def _run_child(train: Path, cache: Path, tokenizer: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(train), str(cache), tokenizer],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tokenizer", default="word", choices=("word", "char"))
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", nargs=3, metavar=("TRAIN", "CACHE", "TOKENIZER"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="seqbench-textfiles-"))
    work.mkdir(parents=True, exist_ok=True)
    train = work / f"bench-{args.rows}.csv"
    t0 = time.perf_counter()
    if not train.exists():
        generate(train, args.rows)
    generated = time.perf_counter() - t0
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cold = _run_child(train, cache, args.tokenizer)
    warm = _run_child(train, cache, args.tokenizer)
    result = {
        "rows": args.rows,
        "file_mb": round(train.stat().st_size / 1e6, 1),
        "tokenizer": args.tokenizer,
        "generate_seconds": round(generated, 1),
        "first_run": cold,
        "second_run": warm,
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
