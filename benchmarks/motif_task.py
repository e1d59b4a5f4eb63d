"""The generated k-mer task where only k-mers of length >= 4 carry the label: which models learn
it (issue 20: the bag must, the recurrent models may not), for docs/benchmarks.md.

    .venv/bin/python benchmarks/motif_task.py                      # defaults below
    .venv/bin/python benchmarks/motif_task.py --n 4000 --epochs 10 --models ngram_bag6,lstm

Writes the task (``seqbench.data.motifs``: random ACGT with one of two planted motifs that hold
the same 1-3-mers) as a CSV, then trains each model through ``seqbench.fit`` on it with
``data=text_files data.tokenizer=char`` (stratified: 20% of the file for test, 10% of the rest
for validation) in a temporary project folder, and prints a Markdown table: test and best validation accuracy, and
wall seconds per run (data preparation included).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

# name -> overrides; ngram_bagN: the bag with k-mers up to N.
MODELS: dict[str, list[str]] = {
    "ngram_bag6": ["model=ngram_bag", "model.net.encoder.max_n=6", "model.optimizer.lr=0.02"],
    "ngram_bag3": ["model=ngram_bag", "model.net.encoder.max_n=3", "model.optimizer.lr=0.02"],
    "lstm": ["model=lstm"],
    "cnn_lstm": ["model=cnn_lstm"],
    "bigru_pool": ["model=bigru_pool"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2500, help="sequences (train+val+test)")
    parser.add_argument("--length", type=int, default=120, help="characters per sequence")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="motif-task-"))
    os.environ["SEQBENCH_ROOT"] = str(root)
    import seqbench
    from seqbench.data.motifs import write_motif_task

    train_file = root / "data" / "motifs.csv"
    negative, positive = write_motif_task(train_file, n=args.n, length=args.length, seed=0)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; motifs "
        f"{negative} / {positive}; {args.n} sequences of {args.length} characters"
    )
    print("| model | test acc (%) | best val acc (%) | seconds |")
    print("| --- | --- | --- | --- |")
    for name in args.models.split(","):
        start = time.perf_counter()
        result = seqbench.fit(
            [
                *MODELS[name],
                "data=text_files",
                f"data.train={train_file}",
                "data.tokenizer=char",
                f"data.max_len={args.length + 10}",
                "model.vocab_size=8",
                f"trainer.max_epochs={args.epochs}",
                f"seed={args.seed}",
                "callbacks.progress_bar.refresh_rate=0",
                f"logger.run_name={name}",
            ],
            root=root,
        )
        seconds = time.perf_counter() - start
        m = result.metrics
        print(
            f"| {name} | {100 * m['test/acc']:.1f} | {100 * m['val/acc_best']:.1f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
