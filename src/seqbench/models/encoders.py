"""Encoders: token ids ``(B, T)`` and true lengths ``(B,)`` -> one vector per sequence."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import torch
from torch import nn

from seqbench.data.text import SIDES
from seqbench.models.arguments import check_choice, check_probability
from seqbench.models.inputs import input_layer
from seqbench.models.randomness import Dropout
from seqbench.models.recurrent import RecurrentLayer, padding_mask

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11


def _check_padding(padding: str) -> None:
    check_choice("padding", padding, SIDES)


class EncoderInputs(TypedDict, total=False):
    """The input settings every encoder built on ``_InputEncoder`` takes as keywords."""

    vocab_size: int | None
    embedding_dim: int
    padding: str
    input_channels: int | None


class _InputEncoder(nn.Module):
    """What the encoders here start with, so that their input settings and defaults are
    defined once: check and keep the padding side, and build the input layer (an embedding for
    token ids, a projection for numeric channels: ``seqbench.models.inputs.input_layer``).
    Subclasses take these settings as ``**inputs`` (``seqbench.config.settings`` lists them)."""

    def __init__(
        self,
        vocab_size: int | None = None,
        embedding_dim: int = 32,
        padding: str = "post",
        input_channels: int | None = None,
    ) -> None:
        super().__init__()
        _check_padding(padding)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
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
        hidden_size: int | list[int] = 100,
        bidirectional: bool = False,
        embedding_dropout: float = 0.0,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        **inputs: Unpack[EncoderInputs],
    ) -> None:
        check_probability("embedding_dropout", embedding_dropout)
        super().__init__(**inputs)
        sizes = [hidden_size] if isinstance(hidden_size, int) else list(hidden_size)
        if not sizes:
            raise ValueError("hidden_size needs at least one layer")
        self.embedding_dropout = Dropout(embedding_dropout)
        layers, width = [], self.embedding_dim
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
        filters: int = 32,
        kernel_size: int = 3,
        pool_size: int = 2,
        hidden_size: int = 100,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        **inputs: Unpack[EncoderInputs],
    ) -> None:
        super().__init__(**inputs)
        self.pool_size = pool_size
        self.conv = nn.Conv1d(self.embedding_dim, filters, kernel_size, padding="same")
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
