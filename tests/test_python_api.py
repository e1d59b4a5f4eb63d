"""The Python API (seqbench.api): docs/python-api.md's examples run as written, and the package
import stays cheap."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import REPO
from test_job_keys import PINNED

DOC = REPO / "docs" / "python-api.md"
DOC_ROOT = '"/tmp/seqbench-demo"'  # the root the examples use; the test points it at tmp_path


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch):
    """Each test starts without these variables and ends with them as they were, even when the
    code under test leaks one (Lightning's logger exports ``MLFLOW_TRACKING_URI``)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SEQBENCH_ROOT"):
        monkeypatch.setenv(name, "")  # records the value to restore at teardown
        monkeypatch.delenv(name)


def python_blocks(markdown: str) -> list[str]:
    """The ```python fenced blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_docs_examples_train_compare_and_score(tmp_path):
    """Every example of the page, in order, in one namespace: as a reader pastes them into a
    notebook. The results are then read back from the MLflow store the examples wrote to."""
    markdown = DOC.read_text(encoding="utf-8")
    blocks = python_blocks(markdown)
    assert len(blocks) == 3, "train, compare, score"
    code = "\n".join(blocks)
    assert code.count(DOC_ROOT) == 1, f"the examples set their root once, as {DOC_ROOT}"
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(code.replace(DOC_ROOT, repr(str(tmp_path))), str(DOC), "exec"), namespace)

    # Train: two seeds, each a FINISHED run in the root's store, its metrics as returned.
    results = namespace["results"]
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db")
    assert namespace["cfg"].logger.tracking_uri == client.tracking_uri
    runs = {
        r.info.run_id: r
        for r in client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    }
    assert set(runs) == {r.run_id for r in results}
    for result in results:
        run = runs[result.run_id]
        assert run.info.status == "FINISHED" and not result.skipped
        assert run.data.metrics["test/acc"] == pytest.approx(result.metrics["test/acc"])
    assert sorted(r.data.params["seed"] for r in runs.values()) == ["1", "2"]
    assert list(tmp_path.joinpath("outputs", "runs").iterdir()), "run folders under the root"

    # Compare: one lstm row over both seeds, mean and std as the runs say.
    table = namespace["table"]
    assert list(table["model"]) == ["lstm"]
    accs = [runs[r.run_id].data.metrics["test/acc"] for r in results]
    row = table.iloc[0]
    assert row["n"] == 2
    assert row["test_acc_mean"] == pytest.approx(np.mean(accs))
    assert row["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))
    assert {"val_acc_best_mean", "test_acc_ci_low", "test_acc_ci_high"} <= set(table.columns)
    assert set(namespace["runs"]["run_id"]) == set(runs)

    # Score: one row per text, probabilities of the synthetic classes summing to 1.
    scores, model = namespace["scores"], namespace["model"]
    assert model.labels == ["B first", "A first"]
    probs = scores[["prob_B first", "prob_A first"]].to_numpy()
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert list(scores["label"]) == [model.labels[i] for i in probs.argmax(axis=1)]
    assert list(scores["tokens"]) == [9, 9]


def test_fit_again_skips_the_finished_run(tmp_path, monkeypatch):
    """As the page says: a second ``fit`` of a finished configuration returns the earlier run;
    ``root`` wins over ``$SEQBENCH_ROOT``; and no call leaves MLflow pointed at its store (a
    later call with another root would write there)."""
    import mlflow

    import seqbench

    monkeypatch.setenv("SEQBENCH_ROOT", str(tmp_path / "elsewhere"))
    tiny = ["data=synthetic", "data.n_train=200", "data.n_test=100", "trainer.max_epochs=1"]
    tiny += ["callbacks.progress_bar.refresh_rate=0", "+logger.log_model=false"]
    first = seqbench.fit(tiny, root=tmp_path)
    again = seqbench.fit(tiny, root=tmp_path)
    assert not first.skipped and again.skipped
    assert again.run_id == first.run_id
    assert again.metrics["test/acc"] == pytest.approx(first.metrics["test/acc"])
    assert not (tmp_path / "elsewhere").exists()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert str(tmp_path) not in mlflow.get_tracking_uri()


def test_compose_matches_the_command_and_keeps_an_explicit_output_dir(tmp_path):
    """The config is the command's: same values, and the same job key as the pinned one of
    ``seqbench-train data=synthetic model=lstm`` (so the command skips a run ``fit`` finished,
    and ``fit`` one the command finished)."""
    import seqbench
    from seqbench.run.jobs import job_key

    cfg = seqbench.compose(["model=bilstm", "seed=3"], root=tmp_path)
    assert (cfg.model.arch, cfg.seed) == ("bilstm", 3)
    assert "hydra" not in cfg
    assert cfg.logger.tracking_uri == f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db"
    run_dir = cfg.paths.output_dir
    assert run_dir.startswith(f"{tmp_path}/outputs/runs/")
    assert seqbench.compose(root=tmp_path).paths.output_dir != run_dir, "a new folder per call"
    chosen = seqbench.compose([f"paths.output_dir={tmp_path}/mine"], root=tmp_path)
    assert chosen.paths.output_dir == f"{tmp_path}/mine"
    overrides, pinned = PINNED["data=synthetic model=lstm"]
    assert job_key(seqbench.compose([*overrides, "trainer.precision=32-true"])) == pinned


def test_compare_and_load_model_say_what_is_missing(tmp_path):
    import seqbench
    from seqbench.report import ReportError
    from seqbench.serving.predict import PredictError

    with pytest.raises(ReportError, match="no MLflow store"):
        seqbench.compare("synthetic", root=tmp_path)
    with pytest.raises(PredictError, match="not a run id"):
        seqbench.load_model("no-such-model", root=tmp_path)


def test_import_seqbench_loads_neither_torch_nor_mlflow():
    """``import seqbench`` in a clean interpreter: the API names resolve lazily, and the heavy
    libraries load only when one is used."""
    code = (
        "import sys, seqbench\n"
        "heavy = ('torch', 'mlflow', 'lightning', 'hydra', 'pandas')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "fit = seqbench.fit\n"
        "print('torch' in sys.modules, sorted(n for n in dir(seqbench) if not n.startswith('_')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert "compose" in out[1] and "fit" in out[1] and "load_model" in out[1]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import seqbench

        seqbench.nope  # noqa: B018
