"""Scoring raw text with a run's logged MLflow model: ``seqbench-predict``, the pyfunc model in a
fresh process, batch invariance, and every bad-input row of issue 9.

Two real (tiny) training runs on ``data=synthetic`` write to a real SQLite store: one trained
with ``post`` padding (the synthetic default) and one with ``pre`` padding (the IMDB default).
Synthetic corpora have no words: their token ids are written as numbers, ``"5 3 9"``.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from mlflow import MlflowClient

from helpers import make_config, tiny
from seqbench.models.encoders import ConvLSTMEncoder, LSTMEncoder
from seqbench.serving import predict
from seqbench.serving.inference import Predictor, Preprocessing
from seqbench.serving.mlflow_model import MODEL_NAME
from seqbench.train import train

TINY = tiny(epochs=1)
SCRIPT = Path(sys.executable).with_name("seqbench-predict")
TEXTS = ["5 3 9 4 7 8", "4 6 6 3 9", "7 7 7 7 3 12 4 9 9 10 11 12 13"]


def _trained(root: Path, padding: str) -> dict:
    cfg = make_config(root, [*TINY, f"data.padding={padding}"])
    result = train(cfg)
    return {"cfg": cfg, "run_id": result.run_id, "uri": cfg.logger.tracking_uri}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """A post- and a pre-padded model, each trained for real into its own store."""
    return {p: _trained(tmp_path_factory.mktemp(f"predict-{p}"), p) for p in ("post", "pre")}


@pytest.fixture()
def env(runs, monkeypatch) -> dict:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", runs["post"]["uri"])
    return runs["post"]


def _own_forward(run: dict, texts: list[str]) -> np.ndarray:
    """P(class 1) from the network rebuilt from the run's config and Lightning checkpoint,
    each text encoded by hand (start token + ids) and fed alone: no seqbench.serving.inference code."""
    client = MlflowClient(run["uri"])
    [ckpt] = client.list_artifacts(run["run_id"], "checkpoints")
    path = client.download_artifacts(run["run_id"], ckpt.path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    net = instantiate(run["cfg"].model.net)
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    )
    net.eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[1, *map(int, text.split())]])
            out.append(torch.sigmoid(net(ids, torch.tensor([ids.size(1)]))).item())
    return np.array(out)


def _cli(
    argv: list[str], capsys, stdin: bytes | None = None, monkeypatch=None
) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = predict.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_predict_arguments_file_and_stdin_match_the_models_own_forward_pass(
    env, tmp_path, capsys, monkeypatch
):
    expected = _own_forward(env, TEXTS)
    run_id = env["run_id"]

    code, out, err = _cli(["--model", run_id, "--format", "jsonl", *TEXTS], capsys)
    assert code == 0, err
    from_args = _jsonl(out)

    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    code, out, err = _cli(
        ["--model", f"runs:/{run_id}/model", "--file", str(path), "--format", "jsonl"], capsys
    )
    assert code == 0, err
    from_file = _jsonl(out)

    # stdin through the installed console script, in its own process
    done = subprocess.run(
        [str(SCRIPT), "--model", run_id, "--format", "jsonl", "-"],
        input="\n".join(TEXTS).encode(),
        capture_output=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": env["uri"]},
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    from_stdin = _jsonl(done.stdout.decode())

    labels = ["B first", "A first"]
    for rows in (from_args, from_file, from_stdin):
        assert [r["text"] for r in rows] == TEXTS
        probs = np.array([r["probabilities"]["A first"] for r in rows])
        np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
        for r in rows:
            assert set(r["probabilities"]) == set(labels)
            assert r["probabilities"]["B first"] == pytest.approx(1 - r["probabilities"]["A first"])
            assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)


def test_table_and_csv_formats_and_a_csv_column(env, tmp_path, capsys):
    code, out, _ = _cli(["--model", env["run_id"], *TEXTS[:2]], capsys)
    assert code == 0 and "prob_A first" in out and TEXTS[0] in out
    source = tmp_path / "in.csv"
    source.write_text('id,review\n1,"5 3 9 4 7 8"\n2,4 6 6 3 9\n', encoding="utf-8")
    code, out, err = _cli(
        ["--model", env["run_id"], "--file", str(source), "--column", "review", "--format", "csv"],
        capsys,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "label,prob_B first,prob_A first,tokens,truncated,text"
    assert [line.rsplit(",", 1)[1] for line in lines[1:]] == TEXTS[:2]


def test_logged_model_loads_in_a_fresh_process_and_predicts_the_same(runs, tmp_path):
    """``mlflow.pyfunc.load_model`` in a new interpreter, started in an empty folder: no data,
    no Hydra composition, and neither the training entry point nor Lightning gets imported."""
    run = runs["pre"]
    expected = _own_forward(run, TEXTS)
    code = f"""
import json, sys, mlflow, pandas as pd
model = mlflow.pyfunc.load_model("runs:/{run["run_id"]}/{MODEL_NAME}")
frame = model.predict(pd.DataFrame({{"text": {TEXTS!r}}}))
listed = model.predict({TEXTS!r})
assert frame.equals(listed)
print(json.dumps({{
    "probs": frame["prob_A first"].tolist(),
    "labels": frame["label"].tolist(),
    "columns": list(frame.columns),
    "imported": sorted(m for m in sys.modules if m in ("seqbench.train", "lightning", "seqbench.data.datamodule")),
}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "MLFLOW_TRACKING_URI": run["uri"]},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["probs"], expected, rtol=0, atol=1e-6)
    assert result["columns"] == ["label", "prob_B first", "prob_A first", "tokens", "truncated"]
    assert result["imported"] == []
    info = MlflowClient(run["uri"]).get_run(run["run_id"])
    assert [o.model_id for o in info.outputs.model_outputs]  # linked: the UI's Model column


def _predictor(runs, padding: str) -> Predictor:
    import mlflow
    from mlflow.pyfunc import load_model

    mlflow.set_tracking_uri(runs[padding]["uri"])
    return load_model(f"runs:/{runs[padding]['run_id']}/model").unwrap_python_model().predictor


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_a_text_scores_the_same_alone_and_beside_a_much_longer_one(runs, padding):
    predictor = _predictor(runs, padding)
    assert predictor.prep.padding == padding
    short = ["5 3 9", "4 4 3"]
    longer = " ".join(str(5 + i % 20) for i in range(28))
    alone = [predictor.predict([t])["prob_A first"].iat[0] for t in short]
    together = predictor.predict([short[0], longer, short[1]], batch_size=8)["prob_A first"]
    np.testing.assert_allclose(together.iloc[[0, 2]].to_numpy(), alone, rtol=0, atol=1e-6)
    if padding == "pre":
        # The check has teeth: padded naively to the longer text's length, the score moves.
        net = _in_pre_mode(predictor.net)
        ids = predictor.encode(short[0]).ids
        width = len(predictor.encode(longer).ids)
        padded = torch.zeros((1, width), dtype=torch.long)
        padded[0, width - len(ids) :] = torch.tensor(ids)
        with torch.no_grad():
            naive = torch.sigmoid(net(padded, torch.tensor([len(ids)]))).item()
        assert abs(naive - alone[0]) > 1e-6


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_batches_scored_as_parallel_slices_give_the_same_scores(runs, padding):
    """seqbench-predict on several cores cuts each batch into slices scored in threads."""
    from seqbench.training.parallel import BatchSplitter

    whole = _predictor(runs, padding)
    sliced = Predictor(whole.net, whole.prep, "cpu", BatchSplitter(2))
    rng = np.random.default_rng(0)
    texts = [" ".join(str(v) for v in rng.integers(3, 30, rng.integers(1, 40))) for _ in range(50)]
    try:
        np.testing.assert_allclose(
            sliced.predict(texts, batch_size=16)["prob_A first"].to_numpy(),
            whole.predict(texts, batch_size=16)["prob_A first"].to_numpy(),
            rtol=0,
            atol=1e-6,
        )
    finally:
        sliced.splitter.close()


def _in_pre_mode(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of the network that reads pads first, as it was trained (the predictor switches
    bucketed pre-padded networks to post mode, see Predictor._scoring_padding)."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if isinstance(module, (LSTMEncoder, ConvLSTMEncoder)):
            module.padding = "pre"
    return net


@pytest.mark.parametrize("arch", ["lstm", "bilstm", "cnn_lstm", "stacked_lstm"])
def test_pre_padded_networks_score_in_post_mode_exactly_as_on_the_unpadded_text(arch, tmp_path):
    """The equivalence the predictor relies on, for every encoder kind (untrained networks:
    the identity holds for any weights)."""
    cfg = make_config(tmp_path, [*TINY, f"model={arch}", "data.padding=pre"])
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    prep = Preprocessing(
        words=[str(i) for i in range(3, 32)],
        tokenizer="word",
        max_len=30,
        truncating="pre",
        padding="pre",
        fixed_length=False,
        labels=["B first", "A first"],
    )
    reference = _in_pre_mode(net).eval()
    predictor = Predictor(net, prep)
    texts = ["5 3 9", "4 4 3 8 9 10 11", " ".join(["7"] * 40), "6 6 6 6 3"]
    scored = predictor.predict(texts, batch_size=3)["prob_A first"].to_numpy()
    with torch.no_grad():
        for text, got in zip(texts, scored, strict=True):
            ids = torch.tensor([predictor.encode(text).ids])
            expected = torch.sigmoid(reference(ids, torch.tensor([ids.size(1)]))).item()
            assert got == pytest.approx(expected, abs=1e-6)


def test_fixed_length_pre_padding_pads_every_text_to_max_len(runs):
    """A model trained with ``data.bucketing=false`` saw every text padded to ``max_len``; it is
    scored the same way, so again neighbours do not matter."""
    from dataclasses import replace

    base = _predictor(runs, "pre")
    predictor = Predictor(base.net, replace(base.prep, fixed_length=True))
    longer = " ".join(["6"] * 28)
    alone = predictor.predict(["5 3 9"])["prob_A first"].iat[0]
    together = predictor.predict(["5 3 9", longer])["prob_A first"].iat[0]
    assert together == pytest.approx(alone, abs=1e-6)
    tokens, _ = predictor._pad([predictor.encode("5 3 9").ids])
    assert tokens.shape == (1, predictor.prep.max_len)


# ---------------------------------------------------------------------------------------------
# Bad input: one test per row of the issue


def test_empty_text_is_scored_as_the_start_token_alone(env, capsys):
    code, out, err = _cli(["--model", env["run_id"], "--format", "jsonl", ""], capsys)
    assert code == 0 and "empty text" in err
    [row] = _jsonl(out)
    assert row["tokens"] == 0 and not row["truncated"]
    assert row["probabilities"]["A first"] == pytest.approx(_own_forward(env, [""])[0], abs=1e-6)


def test_whitespace_only_text_is_the_same_as_an_empty_one(env, capsys):
    code, out, err = _cli(["--model", env["run_id"], "--format", "jsonl", "", " \t "], capsys)
    assert code == 0 and "2 empty text(s)" in err
    empty, blank = _jsonl(out)
    assert blank["probabilities"] == empty["probabilities"] and blank["tokens"] == 0


def test_non_string_value_is_a_one_line_error_naming_the_line(env, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "5 3"}\n{"text": 7}\n', encoding="utf-8")
    code, out, err = _cli(
        ["--model", env["run_id"], "--file", str(source), "--column", "text"], capsys
    )
    assert code == 2 and out == ""
    assert err.strip() == f"seqbench-predict: error: {source} line 2: expected a string, got int 7"
    # and through the pyfunc model: an MlflowException, not a torch traceback
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(env["uri"])
    model = mlflow.pyfunc.load_model(f"runs:/{env['run_id']}/model")
    # (MLflow's schema enforcement turns None into NaN before predict sees it)
    with pytest.raises(MlflowException, match="row 1: expected a string, got float nan"):
        model.predict(["5 3", None])


def test_text_longer_than_max_len_is_truncated_as_in_training(env, capsys):
    max_len = env["cfg"].data.max_len  # 30, start token included
    words = [str(5 + i % 20) for i in range(50)]
    code, out, err = _cli(["--model", env["run_id"], "--format", "jsonl", " ".join(words)], capsys)
    assert code == 0, err
    [row] = _jsonl(out)
    assert row["tokens"] == 50 and row["truncated"] is True
    # data.truncating defaults to pre: the beginning (start token included) is dropped
    kept = words[-max_len:]
    predictor = _predictor({"post": env}, "post")
    ids = torch.tensor([[int(w) for w in kept]])
    with torch.no_grad():
        expected = torch.sigmoid(predictor.net(ids, torch.tensor([max_len]))).item()
    assert row["probabilities"]["A first"] == pytest.approx(expected, abs=1e-6)


def test_unknown_words_map_to_the_out_of_vocabulary_index(env, capsys):
    code, out, err = _cli(
        ["--model", env["run_id"], "--format", "jsonl", "wonderful 5 zzz", "2 5 2"], capsys
    )
    assert code == 0, err
    unknown, explicit_oov = _jsonl(out)
    # "wonderful" and "zzz" are not in the vocabulary: index 2, exactly like writing "2"
    assert unknown["probabilities"] == explicit_oov["probabilities"]


def test_invalid_utf8_in_a_file_is_a_one_line_error_naming_the_line(env, tmp_path, capsys):
    source = tmp_path / "bad.txt"
    source.write_bytes(b"5 3 9\n4 \xff 3\n")
    code, out, err = _cli(["--model", env["run_id"], "--file", str(source)], capsys)
    assert code == 2 and out == ""
    assert err.strip() == (
        f"seqbench-predict: error: {source} line 2: not valid UTF-8 (byte 0xff at column 3)"
    )


def test_unknown_run_id_is_a_one_line_error(env, capsys):
    code, out, err = _cli(["--model", "0" * 32, "5 3"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"Run with id={'0' * 32} not found" in err


def test_unknown_alias_is_a_one_line_error(env, capsys):
    client = MlflowClient(env["uri"])
    client.create_registered_model("predict-test")
    code, out, err = _cli(["--model", "models:/predict-test@champion", "5 3"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "champion" in err, err
    code, _, err = _cli(["--model", "models:/no-such-model@champion", "5 3"], capsys)
    assert code == 2 and "no-such-model" in err and len(err.strip().splitlines()) == 1


def test_predict_leaves_mlflow_uris_and_the_environment_as_they_were(env, capsys, monkeypatch):
    """MLflow's URI setters export environment variables; a leaked MLFLOW_REGISTRY_URI once
    sent a later registration in the same process to another store."""
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    code, _, err = _cli(["--model", env["run_id"], "5 3"], capsys)
    assert code == 0, err
    assert os.environ.get("MLFLOW_TRACKING_URI") == before == env["uri"]
    assert "MLFLOW_REGISTRY_URI" not in os.environ


# The entry file every model logged before issue 16 carries (seqbench/pyfunc_entry.py at 558a80a),
# byte for byte apart from its docstring: it imports the loader from ``seqbench.mlflow_model``.
PRE_MOVE_ENTRY = """from mlflow.models import set_model

from seqbench.mlflow_model import SeqbenchTextClassifier

set_model(SeqbenchTextClassifier())
"""


def test_a_model_logged_before_the_package_move_loads_and_predicts_the_same(runs, tmp_path):
    """Models logged by older seqbench import ``seqbench.mlflow_model``; that path must keep
    loading them (issue 16). The run's model is copied, its entry file replaced by the old one,
    and loaded from the folder in a fresh interpreter."""
    run = runs["pre"]
    expected = _own_forward(run, TEXTS)
    import mlflow

    from seqbench.serving.mlflow_model import use_store

    with use_store(run["uri"]):  # whatever store an earlier test left as MLflow's global one
        folder = Path(
            mlflow.artifacts.download_artifacts(
                f"runs:/{run['run_id']}/{MODEL_NAME}", dst_path=str(tmp_path / "model")
            )
        )
    entries = list(folder.glob("pyfunc_entry.py"))
    assert entries, sorted(p.name for p in folder.iterdir())
    entries[0].write_text(PRE_MOVE_ENTRY)
    code = f"""
import json, mlflow, pandas as pd
model = mlflow.pyfunc.load_model({str(folder)!r})
frame = model.predict(pd.DataFrame({{"text": {TEXTS!r}}}))
print(json.dumps(frame["prob_A first"].tolist()))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probs = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
