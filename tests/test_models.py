"""Model shapes, parameter counts, Keras init, recurrent dropout, and padding invariance."""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from helpers import make_config
from seqbench.models import KerasLSTM, LSTMEncoder, SequenceClassifier
from seqbench.models.classifier import count_trainable
from seqbench.models.recurrent import reverse_padded

ARCHS = ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "bilstm", "cnn_lstm", "stacked_lstm"]


def lstm_params(inputs: int, units: int) -> int:
    """Keras's LSTM count 4*(units*(inputs+units)+units), plus PyTorch's second bias (4*units)."""
    return 4 * (units * (inputs + units) + units) + 4 * units


EXPECTED_PARAMS = {
    "lstm": 5000 * 32 + lstm_params(32, 100) + 101,
    "lstm_dropout": 5000 * 32 + lstm_params(32, 100) + 101,
    "lstm_recurrent_dropout": 5000 * 32 + lstm_params(32, 100) + 101,
    "bilstm": 5000 * 32 + 2 * lstm_params(32, 100) + 201,
    "cnn_lstm": 5000 * 32 + (32 * 32 * 3 + 32) + lstm_params(32, 100) + 101,
    "stacked_lstm": 10000 * 128 + lstm_params(128, 128) + lstm_params(128, 64) + 65,
}
# The seeds' Keras summaries (one LSTM bias): the simple LSTM has 213,301 parameters.
KERAS_SEED_LSTM = 213_301


def build(arch: str, tmp_path, *overrides: str) -> SequenceClassifier:
    cfg = make_config(tmp_path, [f"model={arch}", *overrides])
    return instantiate(cfg.model.net)


@pytest.mark.parametrize("arch", ARCHS)
def test_output_shape_and_parameter_count(arch, tmp_path):
    net = build(arch, tmp_path)
    tokens = torch.randint(0, 5000, (4, 17))
    out = net(tokens, torch.tensor([17, 5, 9, 1]))
    assert out.shape == (4,)
    assert count_trainable(net) == EXPECTED_PARAMS[arch]


def test_seed_lstm_matches_keras_count_up_to_second_bias(tmp_path):
    assert count_trainable(build("lstm", tmp_path)) - 4 * 100 == KERAS_SEED_LSTM


def test_multiclass_head():
    net = SequenceClassifier(
        LSTMEncoder(vocab_size=50, embedding_dim=8, hidden_size=16), num_classes=5
    )
    assert net(torch.randint(0, 50, (3, 7)), torch.tensor([7, 3, 1])).shape == (3, 5)


def test_keras_init_is_default_and_torch_keeps_pytorch_init(tmp_path):
    keras = build("lstm", tmp_path)
    lstm = keras.encoder.layers[0].forward_lstm.lstm
    h = lstm.hidden_size
    assert keras.encoder.embedding.weight.abs().max() <= 0.05
    assert torch.all(lstm.bias_ih_l0[h : 2 * h] == 1) and torch.all(lstm.bias_ih_l0[:h] == 0)
    assert torch.all(lstm.bias_hh_l0 == 0)
    w_hh = lstm.weight_hh_l0  # (4H, H) with orthonormal columns
    assert torch.allclose(w_hh.T @ w_hh, torch.eye(h), atol=1e-4)
    torch_init = build("lstm", tmp_path, "model.init=torch")
    assert torch_init.encoder.embedding.weight.abs().max() > 1.0  # N(0, 1), as nn.Embedding


def test_unknown_init_names_choices():
    with pytest.raises(ValueError, match="keras, torch"):
        SequenceClassifier(
            LSTMEncoder(vocab_size=50, embedding_dim=8, hidden_size=16), init="glorot"
        )


def _recurrent_unchanged(layer: KerasLSTM, x: torch.Tensor, column: int, seed: int) -> torch.Tensor:
    """Per (sequence, step): is the output unchanged when recurrent weight column ``column`` changes?"""
    torch.manual_seed(seed)
    before = layer(x)
    with torch.no_grad():
        layer.lstm.weight_hh_l0[:, column] += 1.0
    torch.manual_seed(seed)  # same masks as before
    after = layer(x)
    with torch.no_grad():
        layer.lstm.weight_hh_l0[:, column] -= 1.0
    return (before - after).abs().amax(dim=-1) < 1e-7


def test_recurrent_dropout_mask_is_constant_over_time_and_off_in_eval():
    torch.manual_seed(0)
    layer = KerasLSTM(8, 16, dropout=0.0, recurrent_dropout=0.5)
    x = torch.randn(256, 20, 8)
    layer.train()
    unchanged = _recurrent_unchanged(layer, x, column=3, seed=1)  # (B, T)
    # From step 1 on, h(t-1)[3] only matters where the sequence's mask keeps unit 3. With one
    # mask per sequence, a sequence is either unaffected at every step or affected at every step.
    per_sequence = unchanged[:, 1:]
    assert torch.all(per_sequence.all(dim=1) | (~per_sequence).all(dim=1))
    dropped = per_sequence.all(dim=1).float().mean()
    assert 0.35 < dropped < 0.65  # about recurrent_dropout of the sequences drop unit 3
    layer.eval()
    assert not _recurrent_unchanged(layer, x, column=3, seed=1)[:, 1:].any()  # no mask in eval
    torch.testing.assert_close(layer(x), layer(x))  # and deterministic


def test_input_dropout_mask_is_constant_over_time_and_off_in_eval():
    torch.manual_seed(0)
    layer = KerasLSTM(16, 8, dropout=0.5)
    x = torch.randn(64, 12, 16, requires_grad=True)
    layer.train()
    layer(x).sum().backward()
    zero = x.grad.abs() == 0  # (B, T, in): a dropped input feature gets no gradient
    assert torch.all(zero.all(dim=1) | (~zero).all(dim=1))  # same features dropped at every step
    assert 0.3 < zero.all(dim=1).float().mean() < 0.7
    x.grad = None
    layer.eval()
    layer(x).sum().backward()
    assert not (x.grad.abs() == 0).all(dim=1).any()


def test_recurrent_loop_equals_fused_lstm_without_dropout():
    torch.manual_seed(0)
    layer = KerasLSTM(8, 16)
    x = torch.randn(4, 9, 8)
    torch.testing.assert_close(
        layer._loop(x, torch.ones(4, 16)), layer.lstm(x)[0], atol=1e-5, rtol=1e-5
    )


def test_nn_lstm_dropout_is_not_used():
    layer = KerasLSTM(8, 16, dropout=0.2, recurrent_dropout=0.2)
    assert layer.lstm.dropout == 0 and isinstance(layer.lstm, nn.LSTM)


def test_reverse_within_length_keeps_pads_in_place():
    x = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]]).unsqueeze(-1)
    out = reverse_padded(x, torch.tensor([3, 5]), "post").squeeze(-1)
    assert out.tolist() == [[3, 2, 1, 0, 0], [8, 7, 6, 5, 4]]
    assert reverse_padded(x, torch.tensor([3, 5]), "pre").squeeze(-1).tolist()[0] == [0, 0, 3, 2, 1]


@pytest.mark.parametrize("arch", ARCHS)
def test_post_padding_is_invisible_to_every_model(arch, tmp_path):
    """A review scores the same alone and in a batch with a much longer review (fast path)."""
    torch.manual_seed(0)
    net = build(arch, tmp_path, "data.padding=post").eval()
    short = torch.randint(3, 5000, (13,))
    short[0] = 1
    long = torch.randint(3, 5000, (200,))
    batch = torch.zeros(2, 200, dtype=torch.long)
    batch[0, :13] = short
    batch[1] = long
    with torch.no_grad():
        alone = net(short.unsqueeze(0), torch.tensor([13]))
        together = net(batch, torch.tensor([13, 200]))
    torch.testing.assert_close(together[0:1], alone, atol=1e-5, rtol=1e-5)
