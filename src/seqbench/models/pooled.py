"""Bidirectional recurrent encoders with masked max- and mean-pooling over time.

Beyond the seeds: instead of reading one final state, every time step's output (both
directions) is pooled, max and mean over the review's real tokens, which is how well-tuned
from-scratch recurrent models reach ~88% on IMDB. Options: an LSTM or a GRU cell, stacked
layers, embedding dropout, a Conv1d front end, and a bag of words and hashed word bigrams
beside the pooled state (``ngram_buckets > 0``; ``seqbench.models.ngrams`` says why).

Padding never reaches the pooled state, with ``pre`` and ``post`` padding alike: pre-padded
batches are first rolled so that each review starts at step 0 (the pads move to the end; a
gather, no copy of the data loop), then the forward direction reads only real tokens before
any pad, the backward direction reads the real tokens reversed within their length
(``reverse_padded``), the conv front end sees zeros where pads were (the same zeros as its own
``same`` padding) and pooling is masked by length. So a review scores the same alone and beside
a much longer one, whatever ``data.padding`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from seqbench.models.arguments import check_at_least, check_choice, check_probability
from seqbench.models.encoders import EncoderInputs, _InputEncoder
from seqbench.models.ngrams import HashedNgramBag
from seqbench.models.randomness import BranchDropout, Dropout
from seqbench.models.recurrent import padding_mask, reverse_padded

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("max_mean", "max", "mean")


def left_align(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Move pre-padded rows' real steps to the front (pads to the end): ``(B, T, ...)``."""
    width = x.size(1)
    steps = torch.arange(width, device=x.device).unsqueeze(0)
    index = (steps + (width - lengths.to(x.device)).unsqueeze(1)) % width  # roll left by T - len
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class BiRecurrent(nn.Module):
    """One bidirectional LSTM/GRU layer over post-padded (left-aligned) input, pads unread.

    Two single-direction fused kernels instead of ``bidirectional=True``: PyTorch's backward
    direction would start at the pads; here it starts at each review's last real token."""

    def __init__(self, input_size: int, hidden_size: int, cell: str = "lstm") -> None:
        super().__init__()
        check_choice("cell", cell, CELLS)
        self.forward_rnn = CELLS[cell](input_size, hidden_size, batch_first=True)
        self.backward_rnn = CELLS[cell](input_size, hidden_size, batch_first=True)
        self.output_size = 2 * hidden_size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, in) -> (B, T, 2H)``; steps past each length are meaningless (masked later)."""
        fwd = self.forward_rnn(x)[0]
        bwd = reverse_padded(
            self.backward_rnn(reverse_padded(x, lengths, "post"))[0], lengths, "post"
        )
        return torch.cat([fwd, bwd], dim=-1)


class PooledRNNEncoder(_InputEncoder):
    """Embedding -> dropout -> [Conv1d + ReLU] -> bidirectional LSTM/GRU layers -> masked pooling.

    ``pooling``: ``max_mean`` (both, concatenated: ``output_size = 4 * hidden_size``), ``max``
    or ``mean``. ``conv_filters=0`` leaves the Conv1d front end out. ``dropout`` is applied
    between stacked recurrent layers. ``ngram_buckets > 0`` appends a ``HashedNgramBag`` of
    ``ngram_dim`` (words and n-grams up to ``ngram_max_n`` hashed into that many buckets, with
    sparse gradients when ``ngram_sparse``) to the pooled vector;
    ``branch_dropout`` then drops the whole recurrent or bag vector for that share of the
    training examples (``BranchDropout``), so that neither branch leaves the other idle.
    ``input_channels`` (numeric series): a Linear projection replaces the embedding; the bag
    of words needs tokens and is refused then."""

    def __init__(
        self,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        embedding_dropout: float = 0.0,
        dropout: float = 0.0,
        conv_filters: int = 0,
        conv_kernel_size: int = 3,
        pooling: str = "max_mean",
        ngram_buckets: int = 0,
        ngram_dim: int = 16,
        ngram_max_n: int = 2,
        ngram_sparse: bool = False,
        branch_dropout: float = 0.0,
        **inputs: Unpack[EncoderInputs],
    ) -> None:
        if ngram_buckets and inputs.get("input_channels"):
            raise ValueError(
                "ngram_buckets > 0 (a bag of words and bigrams) needs token input; numeric "
                "series have none: use model=bilstm_pool or bigru_pool"
            )
        check_choice("pooling", pooling, POOLINGS)
        check_choice("cell", cell, CELLS)
        check_at_least("num_layers", num_layers, 1)
        for name, p in (
            ("embedding_dropout", embedding_dropout),
            ("dropout", dropout),
            ("branch_dropout", branch_dropout),  # checked even without the n-gram bag it drops
        ):
            check_probability(name, p)
        inputs.setdefault("embedding_dim", 64)
        super().__init__(**inputs)
        self.pooling = pooling
        self.embedding_dropout = Dropout(embedding_dropout)
        self.conv = (
            nn.Conv1d(self.embedding_dim, conv_filters, conv_kernel_size, padding="same")
            if conv_filters
            else None
        )
        width = conv_filters or self.embedding_dim
        layers = []
        for _ in range(num_layers):
            layers.append(BiRecurrent(width, hidden_size, cell))
            width = layers[-1].output_size
        self.layers = nn.ModuleList(layers)
        self.between = Dropout(dropout)
        self.ngrams = (
            HashedNgramBag(self.vocab_size, ngram_buckets, ngram_dim, ngram_max_n, ngram_sparse)
            if ngram_buckets
            else None
        )
        self.branch_dropout = BranchDropout(branch_dropout if self.ngrams is not None else 0.0)
        self.output_size = width * (2 if pooling == "max_mean" else 1)
        if self.ngrams is not None:
            self.output_size += self.ngrams.output_size

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(tokens.device).clamp(min=1)
        if self.padding == "pre":
            tokens = left_align(tokens, lengths)
        mask = padding_mask(lengths, tokens.size(1), "post").unsqueeze(-1)  # (B, T, 1)
        x = self.embedding_dropout(self.embedding(tokens))
        if self.conv is not None:
            x = torch.relu(self.conv((x * mask).transpose(1, 2))).transpose(1, 2)
        for i, layer in enumerate(self.layers):
            if i:
                x = self.between(x)
            x = layer(x, lengths)
        pooled = []
        if self.pooling in ("max_mean", "max"):
            pooled.append(x.masked_fill(~mask, float("-inf")).amax(dim=1))
        if self.pooling in ("max_mean", "mean"):
            pooled.append((x * mask).sum(dim=1) / lengths.unsqueeze(1).to(x.dtype))
        if self.ngrams is None:
            return torch.cat(pooled, dim=-1)
        recurrent = self.branch_dropout(torch.cat(pooled, dim=-1))
        bag = self.branch_dropout(self.ngrams(tokens, lengths).to(x.dtype))
        return torch.cat([recurrent, bag], dim=-1)
