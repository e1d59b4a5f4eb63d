"""Encoders: token ids ``(B, T)`` and true lengths ``(B,)`` -> one vector per sequence."""

from __future__ import annotations

import torch
from torch import nn

from seqbench.data.text import SIDES
from seqbench.models.arguments import check_choice, check_probability
from seqbench.models.inputs import input_layer
from seqbench.models.randomness import Dropout
from seqbench.models.recurrent import RecurrentLayer, padding_mask


def _check_padding(padding: str) -> None:
    check_choice("padding", padding, SIDES)


class _InputEncoder(nn.Module):
    """What the encoders here start with: check the padding side and the given dropout
    probabilities, keep the padding side, and build the input layer (an embedding for token
    ids, a projection for numeric channels: ``seqbench.models.inputs.input_layer``)."""

    def __init__(
        self,
        vocab_size: int | None,
        input_channels: int | None,
        embedding_dim: int,
        padding: str,
        **probabilities: float,
    ) -> None:
        super().__init__()
        _check_padding(padding)
        for name, p in probabilities.items():
            check_probability(name, p)
        self.padding = padding
        self.embedding = input_layer(vocab_size, input_channels, embedding_dim)


class LSTMEncoder(_InputEncoder):
    """Embedding -> one or more LSTM layers (``hidden_size`` an int or a list for a stack).

    Covers the seeds' simple, dropout, recurrent-dropout, bidirectional and stacked LSTMs:
    ``embedding_dropout`` is a Dropout layer after the embedding; ``dropout`` and
    ``recurrent_dropout`` are Keras's LSTM-internal input and state dropout.
    ``input_channels`` (numeric series): a Linear projection of the channels replaces the
    embedding (``seqbench.models.inputs``).
    """

    def __init__(
        self,
        vocab_size: int | None,
        embedding_dim: int = 32,
        hidden_size: int | list[int] = 100,
        bidirectional: bool = False,
        embedding_dropout: float = 0.0,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        padding: str = "post",
        input_channels: int | None = None,
    ) -> None:
        super().__init__(
            vocab_size, input_channels, embedding_dim, padding, embedding_dropout=embedding_dropout
        )
        sizes = [hidden_size] if isinstance(hidden_size, int) else list(hidden_size)
        if not sizes:
            raise ValueError("hidden_size needs at least one layer")
        self.embedding_dropout = Dropout(embedding_dropout)
        layers, width = [], embedding_dim
        for size in sizes:
            layers.append(
                RecurrentLayer(width, int(size), bidirectional, dropout, recurrent_dropout)
            )
            width = layers[-1].output_size
        self.layers = nn.ModuleList(layers)
        self.output_size = width

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding_dropout(self.embedding(tokens))
        final = x[:, -1]
        for layer in self.layers:
            x, final = layer(x, lengths, self.padding)
        return final


class ConvLSTMEncoder(_InputEncoder):
    """Embedding -> Conv1d (same padding, ReLU) -> MaxPool1d -> LSTM, as the seeds' CNN+LSTM.

    With ``post`` padding the embedded pads and the conv outputs past each sequence's end are
    zeroed, and pooling rounds up (``ceil_mode``), so the pads are invisible: the zeros equal
    the conv's own zero padding, and ReLU outputs are never below them. With an even width
    (the seeds' 500) pooling is identical to Keras's ``MaxPooling1D``.
    """

    def __init__(
        self,
        vocab_size: int | None,
        embedding_dim: int = 32,
        filters: int = 32,
        kernel_size: int = 3,
        pool_size: int = 2,
        hidden_size: int = 100,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        padding: str = "post",
        input_channels: int | None = None,
    ) -> None:
        super().__init__(vocab_size, input_channels, embedding_dim, padding)
        self.pool_size = pool_size
        self.conv = nn.Conv1d(embedding_dim, filters, kernel_size, padding="same")
        self.pool = nn.MaxPool1d(pool_size, ceil_mode=True)
        self.recurrent = RecurrentLayer(filters, hidden_size, False, dropout, recurrent_dropout)
        self.output_size = self.recurrent.output_size

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)  # (B, T, E)
        mask = padding_mask(lengths.to(tokens.device), tokens.size(1), self.padding).unsqueeze(-1)
        if self.padding == "post":
            x = x * mask
        x = torch.relu(self.conv(x.transpose(1, 2)))  # (B, F, T)
        if self.padding == "post":
            x = x * mask.transpose(1, 2)
        x = self.pool(x).transpose(1, 2)  # (B, ceil(T / pool), F)
        pooled_lengths = torch.div(
            lengths + self.pool_size - 1, self.pool_size, rounding_mode="floor"
        )
        _, final = self.recurrent(x, pooled_lengths, self.padding)
        return final
