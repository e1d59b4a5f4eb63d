"""What data a run saw, recorded in MLflow: dataset inputs per split and the label names.

Each run logs its training, validation and test splits as MLflow dataset inputs (name, digest,
source, row count in the profile, context tag ``train``/``validation``/``test``), so the MLflow
UI's Dataset column and dataset filters work for IMDB, the synthetic task and users' files
alike. The label names (class id = position) go to the ``data.labels`` tag and to the artifact
``data/labels.json``, so tables, confusion matrices and predictions can speak in label names.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from seqbench.data.corpus import EncodedSplit
from seqbench.data.datamodule import SequenceDataModule

CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
MAX_TAG_VALUE = 5000
# Messages of a lost insert race on MLflow's datasets table (PostgreSQL, MySQL, SQLite).
DUPLICATE_KEY_MARKERS = (
    "UniqueViolation",
    "unique constraint",
    "UNIQUE constraint",
    "Duplicate entry",
)
LOG_INPUTS_ATTEMPTS = 5


def split_digest(split: EncodedSplit) -> str:
    """Content hash of an encoded split (tokens, boundaries, labels): equal data, equal digest."""
    digest = hashlib.sha256()
    for array in (split.tokens, split.offsets, split.labels):
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def split_source(datamodule: SequenceDataModule, split: str) -> tuple[str, str]:
    """(source type, source) of a split: the user's file, the IMDB archive or URL, or code."""
    files = getattr(datamodule, "files", None)
    if isinstance(files, dict) and files.get("train"):  # text_files
        path = files.get(split) or files["train"]
        return "local", Path(path).expanduser().resolve().as_uri()
    archive = getattr(datamodule, "archive", None)
    if archive:
        return "local", Path(archive).expanduser().resolve().as_uri()
    url = getattr(datamodule, "url", None)
    if url:
        return "http", url
    return "code", f"seqbench:{type(datamodule).__name__}"


def _input_schema(datamodule: SequenceDataModule, data) -> dict[str, str]:
    """What one example holds: token ids, or numeric steps of ``channels`` values each."""
    dtype = data.tokens.dtype.name  # numeric splits keep their values in ``tokens`` too
    if getattr(datamodule, "input_kind", "tokens") == "numeric":
        return {"series": f"{dtype}[length, {datamodule.channels}]"}
    return {"tokens": f"{dtype}[]"}


def dataset_inputs(datamodule: SequenceDataModule) -> list[DatasetInput]:
    """One MLflow dataset input per split of a set-up ``SequenceDataModule``."""
    inputs = []
    for split, data in datamodule.splits.items():
        source_type, source = split_source(datamodule, split)
        profile = {"num_rows": len(data), "num_classes": datamodule.num_classes}
        schema = {
            **_input_schema(datamodule, data),
            "label": "int64",
            "classes": datamodule.label_names,
        }
        dataset = Dataset(
            name=f"{datamodule.name}-{split}",
            digest=split_digest(data),
            source_type=source_type,
            source=json.dumps({"uri": source, "fingerprint": datamodule.fingerprint}),
            schema=json.dumps(schema)[:MAX_TAG_VALUE],
            profile=json.dumps(profile),
        )
        inputs.append(DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS[split])]))
    return inputs


def log_inputs_racing_other_runs(
    client: MlflowClient, run_id: str, datasets: list[DatasetInput]
) -> None:
    """``client.log_inputs`` that survives parallel jobs logging the same new dataset at once.

    MLflow's SQL store looks a dataset up by (experiment, name, digest) and inserts it when it is
    missing, in two steps: two jobs of a sweep that start together can both miss it, and the
    second insert fails on the unique key (seen on PostgreSQL with a joblib sweep). The failed
    call is rolled back whole, and by the next attempt the dataset exists and is reused, so
    retrying after a short random pause is correct. Written by hand because MLflow's own HTTP
    retries do not cover a 400 answer and the loop is five lines.
    """
    for attempt in range(1, LOG_INPUTS_ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, datasets=datasets)
            return
        except MlflowException as exc:
            lost_race = any(marker in str(exc) for marker in DUPLICATE_KEY_MARKERS)
            if not lost_race or attempt == LOG_INPUTS_ATTEMPTS:
                raise
            time.sleep(random.uniform(0.05, 0.3) * attempt)


def log_data(client: MlflowClient, run_id: str, datamodule: SequenceDataModule) -> None:
    """Dataset inputs, label names (tag ``data.labels`` + ``data/labels.json``) and row counts."""
    log_inputs_racing_other_runs(client, run_id, dataset_inputs(datamodule))
    names = datamodule.label_names
    client.set_tag(run_id, "data.labels", json.dumps(names, ensure_ascii=False)[:MAX_TAG_VALUE])
    client.set_tag(run_id, "data.num_classes", str(len(names)))
    client.log_dict(
        run_id,
        {"classes": names, "rows": {k: len(v) for k, v in datamodule.splits.items()}},
        "data/labels.json",
    )
