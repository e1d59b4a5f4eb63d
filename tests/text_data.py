"""Generated labelled text files for the text_files tests (every format, 2 or 5 classes)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

CUES = {
    "billing": ["invoice", "refund", "charge", "payment"],
    "bug": ["crash", "error", "broken", "freeze"],
    "feature": ["please", "add", "wish", "support"],
    "login": ["password", "account", "locked", "signin"],
    "spam": ["winner", "prize", "free", "click"],
}
FILLER = ["the", "my", "app", "today", "it", "is", "and", "a", "with", "on", "again", "now"]


def make_frame(n: int = 300, classes: int = 5, seed: int = 0, quoted: bool = True) -> pd.DataFrame:
    """``n`` rows of (text, label) with string labels; texts carry class cue words, and (with
    ``quoted``) commas, double quotes and newlines that a CSV writer must quote."""
    rng = np.random.default_rng(seed)
    names = sorted(CUES)[:classes]
    rows = []
    for i in range(n):
        label = names[i % classes]
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 14))))
        for _ in range(2):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(CUES[label])))
        text = " ".join(words)
        if quoted and i % 7 == 0:
            text = f'{text}, "really",\nsecond line, {words[0]}'
        rows.append((text, label))
    return pd.DataFrame(rows, columns=["text", "label"])


def write(frame: pd.DataFrame, path: Path, header: bool = True) -> Path:
    """Write ``frame`` in the format of ``path``'s extension (``.gz`` compresses)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    ext = Path(name).suffix
    if ext in (".csv", ".tsv"):
        text = frame.to_csv(index=False, header=header, sep="," if ext == ".csv" else "\t")
        data = text.encode()
    elif ext in (".jsonl", ".ndjson"):
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in frame.to_dict("records"))
        data = data.encode()
    elif ext == ".parquet":
        frame.to_parquet(path if path.name == name else path.with_name(name), index=False)
        if path.name == name:
            return path
        data = path.with_name(name).read_bytes()
    else:
        raise ValueError(ext)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def main(argv: list[str] | None = None) -> None:
    """``python tests/text_data.py OUT.csv --rows 600 --classes 5``: the README's example file."""
    import argparse

    parser = argparse.ArgumentParser(description="write a small generated labelled text file")
    parser.add_argument("out", type=Path, help=".csv, .tsv, .jsonl, .parquet (optionally .gz)")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--classes", type=int, default=5, choices=range(2, len(CUES) + 1))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write(make_frame(args.rows, args.classes, args.seed), args.out)
    print(f"wrote {args.rows} rows, {args.classes} classes to {args.out}")


if __name__ == "__main__":
    main()
