"""Real data: a seed LSTM trained on a subset of the shared IMDB archive, asked through
``seqbench-predict`` about an obviously positive and an obviously negative review."""

from __future__ import annotations

import json

import pytest

from helpers import make_config
from seqbench.serving import predict
from seqbench.train import train

POSITIVE = (
    "A wonderful film. The acting is brilliant, the story is moving and beautifully told, "
    "and the music is superb. I loved every minute of it; one of the best movies I have seen "
    "in years. A masterpiece, highly recommended."
)
NEGATIVE = (
    "A terrible film. The acting is awful, the plot is boring and makes no sense, and the "
    "dialogue is laughable. I hated every minute of it; one of the worst movies I have ever "
    "seen. A complete waste of time, avoid it."
)


@pytest.mark.scenario
@pytest.mark.realdata
def test_seed_lstm_on_an_imdb_subset_scores_obvious_reviews_correctly(
    shared_archive, real_imdb_cache, tmp_path, capsys, monkeypatch
):
    cfg = make_config(
        tmp_path,
        [
            "model=lstm",
            f"data.archive={shared_archive}",
            f"data.cache_dir={real_imdb_cache}",
            "data.subset=4000",
            "trainer.max_epochs=2",
        ],
    )
    result = train(cfg)
    assert result.metrics["test/acc"] > 0.6, result.metrics  # it learned something at all
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.logger.tracking_uri)
    code = predict.main(["--model", result.run_id, "--format", "jsonl", POSITIVE, NEGATIVE])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    positive, negative = (json.loads(line) for line in captured.out.splitlines())
    assert set(positive["probabilities"]) == {"neg", "pos"}
    assert positive["label"] == "pos", positive
    assert negative["label"] == "neg", negative
