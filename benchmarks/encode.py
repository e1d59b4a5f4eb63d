"""Time IMDB's first, uncached encode (tokenise, vocabulary, index, truncate; no cache read or
write), for docs/benchmarks.md: the vectorised encoder shared with ``data=text_files`` against
the per-token encoder IMDB used before (run this script with ``PYTHONPATH`` at a checkout of
commit aa63d7e for the latter).

    PYTHONPATH=src python benchmarks/encode.py --archive ../shared/data/aclImdb_v1-labeled.tar.gz
    git worktree add /tmp/old aa63d7e
    PYTHONPATH=/tmp/old/src python benchmarks/encode.py --archive ../shared/data/aclImdb_v1-labeled.tar.gz

The archive is extracted once into ``--workdir``; reading the reviews is timed apart from the
encode. Each repeat encodes the same ``RawCorpus`` from scratch; prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import time
from pathlib import Path


def digest(corpus) -> str:
    """SHA-256 of the vocabulary and every array: equal digests mean bit-identical ids."""
    h = hashlib.sha256("\n".join(corpus.vocab.words).encode())
    for split in (corpus.train, corpus.test):
        for array in (split.tokens, split.offsets, split.labels):
            h.update(array.dtype.str.encode())
            h.update(array.tobytes())
    if corpus.train_groups is not None:
        h.update(corpus.train_groups.tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True, help="aclImdb .tar.gz or extracted folder")
    parser.add_argument("--workdir", default="outputs/benchmarks/encode", help="extraction folder")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--max-len", type=int, default=500)
    parser.add_argument("--tokenizer", default="word", choices=("word", "char"))
    args = parser.parse_args()

    import seqbench
    from seqbench.data.imdb import locate, read_imdb

    try:  # since issue 16: one vectorised encoder for IMDB and text files
        from seqbench.data.encoding import encode_corpus

        encoder = "vectorised (seqbench.data.encoding)"
    except ImportError:  # before: a Python loop per token
        from seqbench.data.corpus import encode_corpus

        encoder = "per-token (seqbench.data.corpus)"

    root, _ = locate(args.archive, Path(args.workdir))
    started = time.perf_counter()
    raw = read_imdb(root)
    read_s = time.perf_counter() - started
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        corpus = encode_corpus(raw, args.vocab_size, args.max_len, "pre", args.tokenizer)
        times.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "encoder": encoder,
                "package": str(Path(seqbench.__file__).parent),
                "cpu": platform.processor() or platform.machine(),
                "read_s": round(read_s, 2),
                "encode_s": [round(t, 2) for t in times],
                "encode_median_s": round(statistics.median(times), 2),
                "train_tokens": int(len(corpus.train.tokens)),
                "test_tokens": int(len(corpus.test.tokens)),
                "digest": digest(corpus),
            }
        )
    )


if __name__ == "__main__":
    main()
