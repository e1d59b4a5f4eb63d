"""``seqbench-predict``: score raw text with a run's logged model.

    seqbench-predict --model <run id> "A wonderful film." "Dull and far too long."
    seqbench-predict --model models:/imdb-lstm@champion --file reviews.txt --format jsonl
    cat reviews.txt | seqbench-predict --model runs:/<run id>/model -
    seqbench-predict --model outputs/exported-model --file reviews.csv --column review --format csv

Texts come from the arguments, a file (one text per line; ``-`` is stdin), or a column of a
CSV or JSON-lines file (``--column``). Results go to stdout in input order; progress and errors
go to stderr. A user error (unknown run, bad file, non-string value) is one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pandas as pd

from seqbench.config.access import TrackingUnreachable, check_reachable
from seqbench.config.store import DEFAULT_URI_HELP, default_tracking_uri, redact_text, redact_uri
from seqbench.serving.schema import (
    LABEL_COLUMN,
    PROB_PREFIX,
    TOKENS_COLUMN,
    TRUNCATED_COLUMN,
    InputError,
    check_texts,
)

if TYPE_CHECKING:  # torch: imported once the model is known to be reachable (schema says why)
    from seqbench.serving.inference import Predictor
    from seqbench.training.parallel import BatchSplitter

EXIT_USAGE = 2
PROGRESS_FROM = 1000  # texts; smaller inputs finish before a bar would say anything
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
SERIES_FILES = (".npy", ".npz", ".ts", ".arff")


class PredictError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# Reading texts


def _decode_lines(data: bytes, name: str) -> list[str]:
    """One text per line (``\\n`` or ``\\r\\n``); a final newline does not add an empty text.
    Invalid UTF-8 is an error naming the line, never a silently mangled review."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    texts = []
    for number, raw in enumerate(lines, start=1):
        try:
            texts.append(raw.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise PredictError(
                f"{name} line {number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                f"column {exc.start + 1})"
            ) from None
    return texts


def _read_bytes(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "stdin"
    try:
        return Path(path).read_bytes(), path
    except OSError as exc:
        raise PredictError(f"cannot read {path}: {exc.strerror}") from None


def _column_texts(data: bytes, name: str, column: str, jsonl: bool) -> list[str]:
    """The ``column`` of a CSV or JSON-lines file; non-string values are refused by line."""
    lines = _decode_lines(data, name)
    if jsonl:
        values = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PredictError(f"{name} line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or column not in record:
                raise PredictError(f"{name} line {number}: no field {column!r}")
            values.append((number, record[column]))
    else:
        reader = csv.DictReader(lines)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise PredictError(
                f"{name}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])})"
            )
        # Line numbers as a reader counts them: the header is line 1 (multi-line cells aside).
        values = [(reader.line_num, row[column]) for row in reader]
    numbers = [n for n, _ in values]
    try:
        return check_texts((v for _, v in values), lambda i: f"{name} line {numbers[i]}")
    except InputError as exc:
        raise PredictError(str(exc)) from None


def read_texts(args: argparse.Namespace) -> list[str]:
    """Texts from positional arguments (``-``: stdin, one per line), ``--file`` or ``--column``."""
    sources = [bool(args.texts), args.file is not None]
    if sum(sources) != 1:
        raise PredictError("give texts as arguments, or --file PATH (- for stdin), not both")
    if args.texts == ["-"]:
        args.texts, args.file = [], "-"
    if args.file is None:
        if "-" in args.texts:
            raise PredictError("'-' (stdin) cannot be mixed with texts given as arguments")
        if args.column:
            raise PredictError("--column needs --file (a CSV or JSON-lines file)")
        return list(args.texts)
    data, name = _read_bytes(args.file)
    if args.column:
        jsonl = args.file.endswith((".jsonl", ".ndjson", ".json"))
        return _column_texts(data, name, args.column, jsonl)
    return _decode_lines(data, name)


# ---------------------------------------------------------------------------------------------
# Loading the model


def model_uri(model: str) -> str:
    """A local model folder, a ``runs:/``/``models:/`` (any ``scheme:/``) URI, or a run id."""
    if Path(model).is_dir():
        if not (Path(model) / "MLmodel").is_file():
            raise PredictError(f"{model} is a folder but not an MLflow model (no MLmodel file)")
        return str(Path(model).resolve())
    if ":/" in model:
        return model
    if _RUN_ID.match(model):
        return f"runs:/{model}/model"
    raise PredictError(
        f"--model {model!r} is not a run id, a runs:/ or models:/ URI, or a model folder"
    )


def load_predictor(model: str, tracking_uri: str, device: str, batch_size: int = 256) -> Predictor:
    """The seqbench predictor inside an MLflow model; MLflow errors become one line. A model in
    the store is refused before torch is imported when the store will not let us in."""
    uri = model_uri(model)
    if uri.startswith(("runs:/", "models:/")):  # read from the store: it must let us in
        try:
            check_reachable(tracking_uri)
        except TrackingUnreachable as exc:
            raise PredictError(str(exc)) from None
    import mlflow
    from mlflow.exceptions import MlflowException

    from seqbench.serving.inference import Predictor
    from seqbench.serving.mlflow_model import SeqbenchTextClassifier, use_store

    try:
        with use_store(tracking_uri):
            loaded = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        first = str(exc.message).strip().splitlines()[0]
        raise PredictError(
            f"cannot load model {uri} from {redact_uri(tracking_uri)}: {redact_text(first)}"
        ) from None
    except OSError as exc:
        raise PredictError(f"cannot load model {uri}: {exc}") from None
    inner = loaded.unwrap_python_model()
    from seqbench.serving.mlflow_model import SeqbenchSeriesClassifier
    from seqbench.serving.numeric import NumericPredictor

    if isinstance(inner, SeqbenchSeriesClassifier):  # numeric series: no batch slicing
        return NumericPredictor(inner.predictor.net, inner.predictor.prep, device)  # type: ignore[return-value]
    if not isinstance(inner, SeqbenchTextClassifier):
        raise PredictError(f"{uri} is not a seqbench text model ({type(inner).__name__})")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PredictError("--device cuda: no CUDA device is available to torch")
    splitter = cpu_splitter(device, batch_size)
    return Predictor(inner.predictor.net, inner.predictor.prep, device, splitter)


# A slice holds at least this many texts; thinner slices cost more in overhead than they gain.
MIN_SLICE = 32


def cpu_splitter(device: str, batch_size: int = 256) -> BatchSplitter | None:
    """On a CPU with several cores: score each batch as parallel slices, one thread each.

    Why: an LSTM step is a chain of small matrix products that torch spreads poorly over
    intra-op threads; independent slices keep every core busy (docs/benchmarks.md, issue 9).
    Sets torch's intra-op threads to the cores per slice (a process-wide setting)."""
    import torch

    from seqbench.training.parallel import BatchSplitter

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    splits = min(cores or 1, max(1, batch_size // MIN_SLICE))
    if device != "cpu" or splits < 2:
        return None
    torch.set_num_threads(max(1, (cores or 1) // splits))
    return BatchSplitter(splits)


# ---------------------------------------------------------------------------------------------
# Writing results


def write(
    frame: pd.DataFrame, texts: Sequence[str], labels: Sequence[str], fmt: str, out: IO[str]
) -> None:
    """``jsonl``: one object per text with ``label``, ``probabilities`` (label -> probability),
    ``tokens``, ``truncated`` and ``text``; ``csv``: the same flat, one ``prob_<label>`` column
    per class; ``table``: aligned columns for reading, texts shortened."""
    prob_cols = [f"{PROB_PREFIX}{label}" for label in labels]
    if fmt == "jsonl":
        # Plain lists, not per-cell pandas lookups: 25,000 rows are written in a fraction of a second.
        label_values = frame[LABEL_COLUMN].tolist()
        probs = frame[prob_cols].to_numpy().tolist()
        tokens = frame[TOKENS_COLUMN].tolist()
        truncated = frame[TRUNCATED_COLUMN].tolist()
        for i, text in enumerate(texts):
            record = {
                "label": label_values[i],
                "probabilities": dict(zip(labels, probs[i], strict=True)),
                "tokens": int(tokens[i]),
                "truncated": bool(truncated[i]),
                "text": text,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        flat = frame.copy()
        flat["text"] = list(texts)
        flat.to_csv(out, index=False, lineterminator="\n", float_format="%.6f")
    else:
        shown = frame.copy()
        for col in prob_cols:
            shown[col] = shown[col].map(lambda p: f"{p:.4f}")
        shown["text"] = [t if len(t) <= 60 else t[:57] + "..." for t in texts]
        shown["text"] = shown["text"].str.replace(r"\s+", " ", regex=True)
        out.write(shown.to_markdown(index=False, disable_numparse=True) + "\n")


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="seqbench-predict",
        description="Score raw texts with a seqbench model logged to MLflow: predicted label "
        "and class probabilities per text, in input order.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="run id, runs:/<run id>/model, models:/<name>@<alias> (or /<version>), "
        "or a local MLflow model folder",
    )
    parser.add_argument("texts", nargs="*", help="texts to score; '-' reads stdin, one per line")
    parser.add_argument("--file", help="file with one text per line ('-': stdin), or with --column")
    parser.add_argument(
        "--column", help="score this column of --file, read as CSV (or JSON lines: .jsonl)"
    )
    parser.add_argument(
        "--series",
        action="store_true",
        help="--file holds numeric series: JSON arrays (.json, or - for stdin); implied by "
        ".npy, .npz, .ts and .arff files",
    )
    parser.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI for run ids and runs:/ models:/ URIs "
        f"(default: {DEFAULT_URI_HELP})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: 0 on success, 2 with a one-line message for user errors."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = parse_args(argv)
    if args.file and (args.series or args.file.endswith(SERIES_FILES)):
        return _main_series(args)
    try:
        if args.batch_size < 1:
            raise PredictError(f"--batch-size must be positive, got {args.batch_size}")
        texts = read_texts(args)
        predictor = load_predictor(
            args.model, args.tracking_uri or default_tracking_uri(), args.device, args.batch_size
        )
        blank = [i for i, t in enumerate(texts) if not t.strip()]
        if blank:
            print(
                f"seqbench-predict: note: {len(blank)} empty text(s) (first: #{blank[0] + 1}) "
                "scored as the start token alone, as training encodes an empty review",
                file=sys.stderr,
            )
        frame = _predict_with_progress(predictor, texts, args.batch_size)
    except PredictError as exc:
        print(f"seqbench-predict: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    write(frame, texts, predictor.labels, args.format, sys.stdout)
    sys.stdout.flush()
    return 0


def _predict_with_progress(predictor: Predictor, texts: list[str], batch_size: int) -> pd.DataFrame:
    from tqdm.auto import tqdm

    with tqdm(
        total=len(texts),
        desc="scoring",
        unit="text",
        file=sys.stderr,
        disable=len(texts) < PROGRESS_FROM,
    ) as bar:
        return predictor.predict(texts, batch_size=batch_size, progress=bar.update)


def _main_series(args: argparse.Namespace) -> int:
    """Numeric series from ``--file``, scored by a numeric model (``seqbench.serving.numeric``)."""
    try:
        predictor = load_predictor(
            args.model, args.tracking_uri or default_tracking_uri(), args.device
        )
        from seqbench.serving.numeric import NumericPredictor, read_series_input

        if not isinstance(predictor, NumericPredictor):
            raise PredictError(f"{args.model} is a text model; numeric series need a numeric one")
        stdin = sys.stdin.read() if args.file == "-" else None
        frame = predictor.predict(read_series_input(args.file, stdin), args.batch_size)
    except (PredictError, InputError) as exc:
        print(f"seqbench-predict: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "jsonl":
        probs = frame[[c for c in frame.columns if c.startswith(PROB_PREFIX)]].to_numpy()
        for label, row, steps in zip(
            frame[LABEL_COLUMN], probs.tolist(), frame["steps"], strict=True
        ):
            record = {
                "label": label,
                "probabilities": dict(zip(predictor.labels, row, strict=True)),
            }
            print(json.dumps(record | {"steps": int(steps)}, ensure_ascii=False))
    elif args.format == "csv":
        frame.to_csv(sys.stdout, index=False, lineterminator="\n", float_format="%.6f")
    else:
        print(frame.to_markdown(index=False, floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
