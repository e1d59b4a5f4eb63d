"""Models on numeric input: every seed and pooled architecture plus LSTM-FCN/MLSTM-FCN get an
input projection from the data's channel count, score a short series the same alone and padded
beside a long one, and a model that cannot read the data's kind is refused before any run."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from helpers import make_config
from seqbench.models.inputs import InputKindError, check_input_kind

NUMERIC_MODELS = [
    "lstm",
    "lstm_dropout",
    "lstm_recurrent_dropout",
    "bilstm",
    "stacked_lstm",
    "cnn_lstm",
    "bilstm_pool",
    "bigru_pool",
    "lstm_fcn",
    "mlstm_fcn",
]
CHANNELS = 3


@functools.cache
def _config(*overrides: str):
    """Composed once per distinct command line (composition is most of these tests' time)."""
    return make_config(Path(tempfile.gettempdir()) / "seqbench-series-models", list(overrides))


def _numeric_net(tmp_path, model: str, classes: int = 3) -> torch.nn.Module:
    cfg = _config(f"model={model}", "data=series", "data.train=/x/toy.npz").copy()
    check_input_kind(cfg)
    with open_dict(cfg):
        cfg.data.num_classes = classes
        cfg.model.net.encoder.input_channels = CHANNELS  # what seqbench.models.inputs fills in
    return instantiate(cfg.model.net)


@pytest.mark.parametrize("model", NUMERIC_MODELS)
def test_numeric_input_scores_the_same_alone_and_beside_a_longer_series(tmp_path, model):
    torch.manual_seed(0)
    net = _numeric_net(tmp_path, model)
    if model.endswith("fcn"):  # batch norm with running statistics that are not the identity
        net.train()
        net(torch.randn(8, 40, CHANNELS), torch.full((8,), 40))
    net.eval()
    short, long = torch.randn(1, 7, CHANNELS), torch.randn(1, 60, CHANNELS)
    alone = net(short, torch.tensor([7]))
    batch = torch.zeros(2, 60, CHANNELS)
    batch[0, :7], batch[1] = short[0], long[0]
    beside = net(batch, torch.tensor([7, 60]))
    torch.testing.assert_close(beside[0], alone[0], atol=1e-5, rtol=1e-5)
    # the pads really are ignored: garbage after the short series changes nothing
    batch[0, 7:] = 1e3
    torch.testing.assert_close(net(batch, torch.tensor([7, 60]))[0], alone[0], atol=1e-5, rtol=1e-5)


def test_fcn_training_statistics_ignore_padding(tmp_path):
    """Masked batch norm: a padded training batch updates the running statistics exactly as
    the same series without padding (so unequal-length data trains as equal-length data)."""
    torch.manual_seed(0)
    net = _numeric_net(tmp_path, "lstm_fcn").train()
    series = torch.randn(4, 20, CHANNELS)
    padded = torch.cat([series, torch.full((4, 30, CHANNELS), 7.0)], dim=1)
    twin = _numeric_net(tmp_path, "lstm_fcn").train()
    twin.load_state_dict(net.state_dict())
    net.encoder.lstm_dropout.p = twin.encoder.lstm_dropout.p = 0.0
    net(series, torch.full((4,), 20))
    twin(padded, torch.full((4,), 20))
    norm, norm_twin = net.encoder.blocks[0].norm, twin.encoder.blocks[0].norm
    torch.testing.assert_close(norm.running_mean, norm_twin.running_mean)
    torch.testing.assert_close(norm.running_var, norm_twin.running_var)


def test_token_models_keep_their_embedding(tmp_path):
    cfg = _config("model=lstm", "data=synthetic")
    check_input_kind(cfg)
    net = instantiate(cfg.model.net)
    assert isinstance(net.encoder.embedding, torch.nn.Embedding)
    assert isinstance(_numeric_net(tmp_path, "lstm").encoder.embedding, torch.nn.Linear)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model=bigru_ngram", "data=ucr", "data.name=GunPoint"],
            "model=bigru_ngram cannot read numeric series",
        ),
        (["model=lstm_fcn", "data=synthetic"], "model=lstm_fcn reads numeric series only"),
    ],
)
def test_model_and_input_kind_mismatch_is_refused(tmp_path, overrides, message):
    with pytest.raises(InputKindError, match=message):
        check_input_kind(_config(*overrides))


@pytest.mark.parametrize("model", ["lstm", "mlstm_fcn"])
@pytest.mark.parametrize("name", ["JapaneseVowels", "BasicMotions", "GunPoint", "ItalyPowerDemand"])
def test_ts_suite_anneals_the_learning_rate_to_each_data_sets_last_epoch(tmp_path, name, model):
    """The suite tests its final weights, which at a constant rate are a lottery (GunPoint,
    LSTM-FCN seed 1: 81% test; annealed: 99.3%): the optimiser the task builds must start at
    Adam's 1e-3 and reach the floor exactly at the data set's own last epoch, never before."""
    from seqbench.training.task import build_task

    cfg = make_config(tmp_path, ["experiment=ts_suite", f"data.name={name}", f"model={model}"])
    with open_dict(cfg):
        cfg.model.net.encoder.input_channels = 1  # what the data module tells the model
        cfg.data.num_classes = 2
    epochs = cfg.trainer.max_epochs
    assert epochs == cfg.ts_epochs[name]
    setup = build_task(cfg).configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(epochs):  # Lightning steps an "epoch" scheduler once after each epoch
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert rates[-1] > 1e-5 and optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
