"""A bag of words and hashed word bigrams: the n-gram evidence a recurrent encoder misses.

On IMDB a linear model over word bigrams (NBSVM-bi, Wang & Manning 2012: 91.2%) beats every
recurrent model trained from scratch on the labelled reviews alone (~88-89%): 22,500 reviews
are too few for an LSTM to learn phrase-level cues such as "not good" or "waste of" from
64-dimensional word vectors. This module adds that evidence beside the recurrent state, the
fastText way (Joulin et al. 2017): each word and each pair of neighbouring words has its own
small vector, bigrams hashed into a fixed number of buckets (no bigram vocabulary to build,
store or ship with the model), and the review's vector is their mean over its real tokens.

Written here rather than taken from a library: ``nn.EmbeddingBag`` would need the bigram ids
flattened into offsets per batch, while this works on the padded ``(B, T)`` batch every
encoder gets, with the same length mask, so a review scores the same alone and beside a much
longer one.
"""

from __future__ import annotations

import torch
from torch import nn

from seqbench.models.recurrent import padding_mask

# Knuth's multiplicative hash constant (2^32 / golden ratio): spreads consecutive pair ids
# over the buckets. ``(a * vocab + b) * _HASH`` stays below 2^63 for vocabularies < 2^30 / 2.
_HASH = 2654435761


class HashedNgramBag(nn.Module):
    """Mean of word and hashed word-bigram vectors over each review's real tokens.

    Expects post-padded (left-aligned) ``tokens``; ``(B, T) -> (B, dim)``. The first bigram
    pairs the start token with the first word, so "begins with" cues count too."""

    def __init__(self, vocab_size: int, buckets: int, dim: int = 16) -> None:
        super().__init__()
        if buckets < 1 or dim < 1:
            raise ValueError(f"ngram buckets and dim must be at least 1, got {buckets}, {dim}")
        if vocab_size >= 2**29:
            raise ValueError(f"vocab_size={vocab_size} is too large to hash word pairs")
        self.vocab_size = vocab_size
        self.buckets = buckets
        self.words = nn.Embedding(vocab_size, dim)
        self.bigrams = nn.Embedding(buckets, dim)
        self.output_size = dim

    def bigram_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bucket of each neighbouring pair: ``(B, T) -> (B, T - 1)``."""
        pairs = tokens[:, :-1].long() * self.vocab_size + tokens[:, 1:].long()
        return (pairs * _HASH) % self.buckets

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(tokens.device).clamp(min=1)
        real = padding_mask(lengths, tokens.size(1), "post").unsqueeze(-1)  # (B, T, 1)
        total = (self.words(tokens) * real).sum(dim=1)
        if tokens.size(1) > 1:  # a pair is real when its second token is
            total = total + (self.bigrams(self.bigram_ids(tokens)) * real[:, 1:]).sum(dim=1)
        count = (2 * lengths - 1).unsqueeze(1).to(total.dtype)  # words + pairs
        return total / count
