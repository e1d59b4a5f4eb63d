"""Hashed n-grams of tokens: the phrase-level evidence a recurrent encoder misses.

On IMDB a linear model over word bigrams (NBSVM-bi, Wang & Manning 2012: 91.2%) beats every
recurrent model trained from scratch on the labelled reviews alone (~88-89%): 22,500 reviews
are too few for an LSTM to learn phrase-level cues such as "not good" or "waste of" from
64-dimensional word vectors. This module gives each token and each run of 2..``max_n``
neighbouring tokens its own small vector, the fastText way (Joulin et al. 2017): n-grams are
hashed into a fixed number of buckets (no n-gram vocabulary to build, store or ship with the
model). ``HashedNgramBag`` is the mean of those vectors beside ``bigru_ngram``'s recurrent
state; ``seqbench.models.bag`` builds the stand-alone baseline (``model=ngram_bag``) on it.

``sparse=True`` makes the tables' gradients sparse: only the rows a batch touched are updated
(``seqbench.training.optimizers`` pairs them with ``torch.optim.SparseAdam``). A dense Adam
update of a 2^20-row table costs far more than the forward pass that read 50k of its rows.

Written here rather than taken from a library: ``nn.EmbeddingBag`` would need the n-gram ids
flattened into offsets per batch, while this works on the padded ``(B, T)`` batch every encoder
gets, with the same length mask, so a review scores the same alone and beside a much longer one.
"""

from __future__ import annotations

import torch
from torch import nn

from seqbench.models.arguments import check_at_least
from seqbench.models.recurrent import padding_mask

# Knuth's multiplicative hash constant (2^32 / golden ratio): spreads consecutive pair ids
# over the buckets. ``(a * vocab + b) * _HASH`` stays below 2^63 for vocabularies < 2^30 / 2.
_HASH = 2654435761
# Longer n-grams fold their tokens in with int64 arithmetic that may wrap around (deterministic
# on every platform torch runs on); the order is mixed in so "a b c" and "a b" differ.
_ORDER = 0x9E3779B97F4A7C15 - 2**64  # 64-bit golden ratio as a signed int64


def ngram_ids(tokens: torch.Tensor, n: int, vocab_size: int, buckets: int) -> torch.Tensor:
    """Bucket of each run of ``n`` neighbouring tokens: ``(B, T) -> (B, T - n + 1)``.

    Bigrams keep the hash ``bigru_ngram`` was trained with (``(a * vocab + b) * _HASH``);
    longer n-grams fold each token in and mix the order in before the bucket is taken."""
    width = tokens.size(1) - n + 1
    ids = tokens[:, :width].long()
    for k in range(1, n):
        ids = ids * vocab_size + tokens[:, k : k + width].long()
    if n > 2:
        ids = ids * _ORDER + n
    return torch.remainder(ids * _HASH, buckets)


class HashedNgramBag(nn.Module):
    """Mean of token and hashed n-gram (2..``max_n``) vectors over each sequence's real tokens.

    Expects post-padded (left-aligned) ``tokens``; ``(B, T) -> (B, dim)``. An n-gram is real
    when its last token is, and the first one starts at the start token, so "begins with" cues
    count too."""

    def __init__(
        self, vocab_size: int, buckets: int, dim: int = 16, max_n: int = 2, sparse: bool = False
    ) -> None:
        super().__init__()
        if buckets < 1 or dim < 1:
            raise ValueError(f"ngram buckets and dim must be at least 1, got {buckets}, {dim}")
        check_at_least("max_n", max_n, 2)
        if vocab_size ** min(max_n, 2) >= 2**58:
            raise ValueError(f"vocab_size={vocab_size} is too large to hash token pairs")
        self.vocab_size = vocab_size
        self.buckets = buckets
        self.max_n = max_n
        self.words = nn.Embedding(vocab_size, dim, sparse=sparse)
        self.bigrams = nn.Embedding(buckets, dim, sparse=sparse)  # all orders >= 2 share it
        self.output_size = dim

    def bigram_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bucket of each neighbouring pair: ``(B, T) -> (B, T - 1)``."""
        return ngram_ids(tokens, 2, self.vocab_size, self.buckets)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(tokens.device).clamp(min=1)
        real = padding_mask(lengths, tokens.size(1), "post").unsqueeze(-1)  # (B, T, 1)
        total = (self.words(tokens) * real).sum(dim=1)
        count = lengths.clone()
        for n in range(2, self.max_n + 1):
            if tokens.size(1) < n:
                break
            ids = ngram_ids(tokens, n, self.vocab_size, self.buckets)
            total = total + (self.bigrams(ids) * real[:, n - 1 :]).sum(dim=1)
            count = count + (lengths - n + 1).clamp(min=0)
        return total / count.unsqueeze(1).to(total.dtype)
