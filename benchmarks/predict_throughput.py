"""Throughput of ``seqbench-predict`` on the 25,000 IMDB test reviews (issue 9).

    python benchmarks/predict_throughput.py --archive ../shared/data/aclImdb_v1-labeled.tar.gz \
        --model <run id of a seed LSTM> [--repeats 3]

Writes the test reviews one per line (each review is one line in the archive; any newline inside
a review would become a space) to a temporary file, then times the whole console command,
``seqbench-predict --model ... --file reviews.txt --format jsonl > out.jsonl``, as a user runs it:
process start, imports and model loading included. Prints each repeat's wall time and the
accuracy of the predicted labels against the archive's (a check that the right thing was timed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--model", required=True, help="run id, runs:/ or models:/ URI")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args()

    from seqbench.config.paths import project_root
    from seqbench.data.imdb import locate, read_imdb

    root, _ = locate(args.archive, project_root() / "outputs" / "data" / "imdb")
    corpus = read_imdb(root)
    texts = [" ".join(t.splitlines()) for t in corpus.test_texts]
    labels = [corpus.classes[int(i)] for i in corpus.test_labels]
    script = Path(sys.executable).with_name("seqbench-predict")
    env = dict(os.environ)
    if args.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = args.tracking_uri
    with tempfile.TemporaryDirectory() as tmp:
        reviews = Path(tmp) / "reviews.txt"
        reviews.write_text("\n".join(texts) + "\n", encoding="utf-8")
        seconds = []
        for repeat in range(args.repeats):
            out = Path(tmp) / "out.jsonl"
            start = time.perf_counter()
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            with open(out, "w") as sink:
                done = subprocess.run(
                    [
                        str(script),
                        "--model",
                        args.model,
                        "--file",
                        str(reviews),
                        "--format",
                        "jsonl",
                        "--batch-size",
                        str(args.batch_size),
                    ],
                    stdout=sink,
                    stderr=subprocess.PIPE,  # the progress bar; shown on failure only
                    env=env,
                )
            if done.returncode:
                raise SystemExit(done.stderr.decode()[-3000:])
            seconds.append(time.perf_counter() - start)
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
                cpu_after.ru_stime - cpu_before.ru_stime
            )
            predicted = [json.loads(line)["label"] for line in out.read_text().splitlines()]
            assert len(predicted) == len(texts), (len(predicted), len(texts))
            accuracy = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(texts)
            print(
                f"load average {os.getloadavg()[0]:.2f}; repeat {repeat + 1}: {len(texts)} reviews in {seconds[-1]:.2f} s "
                f"({len(texts) / seconds[-1]:.0f} reviews/s, CPU time {cpu:.1f} s), accuracy {100 * accuracy:.2f}%"
            )
    print(
        f"median {statistics.median(seconds):.2f} s, min {min(seconds):.2f} s over {len(seconds)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
