"""``model=ngram_bag``: a hashed bag of token n-grams and a linear head, the strong simple baseline.

Every comparison table should show how far a sequence model is above a model that ignores
order beyond ``max_n`` tokens. Two ways to pool the bag:

- ``weighting: mean`` (fastText, Joulin et al. 2017): the mean of the token and n-gram vectors.
- ``weighting: nb`` (NBSVM, Wang & Manning 2012, with a logistic loss): each distinct token and
  n-gram of a sequence counts once, scaled by its naive-Bayes log-count ratio
  ``r = log((p / |p|) / (q / |q|))`` from the training split (``p``, ``q``: how many positive and
  negative training sequences hold it, plus ``nb_alpha``), and the scaled vectors are summed.
  The ratios are statistics of the training labels, like a normaliser's mean: the task counts
  them in one pass over the training split before the first step (``observe`` /
  ``finish_observing``) and they are saved with the weights, so a resumed run and a served model
  never count again. Two classes only (the ratio compares one class with the other).
  ``ngram_dropout`` drops each distinct n-gram of a training sequence with that probability,
  the regulariser that lets such a wide linear model train for several epochs (dropout
  training of NB-weighted n-grams: Wang & Manning 2013).

Over words (``data.tokenizer=word``) n-grams are phrases; over characters (``data.tokenizer=char``)
they are k-mers, the features that carry the label in DNA- or protein-like sequences, where
recurrent models trained from scratch often stay at the majority class (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from seqbench.models.arguments import (
    ModelArgumentError,
    check_at_least,
    check_choice,
    check_probability,
)
from seqbench.models.encoders import _check_padding
from seqbench.models.ngrams import HashedNgramBag, ngram_ids
from seqbench.models.pooled import left_align
from seqbench.models.recurrent import padding_mask

WEIGHTINGS = ("mean", "nb")


class NgramBagEncoder(nn.Module):
    """Tokens -> hashed n-grams 1..``max_n`` -> one ``dim``-vector per sequence (see module doc).

    ``sparse`` gives the tables sparse gradients (the optimiser then updates only the rows a
    batch touched, ``seqbench.training.optimizers``)."""

    def __init__(
        self,
        vocab_size: int,
        buckets: int = 1048576,
        dim: int = 16,
        max_n: int = 2,
        sparse: bool = True,
        weighting: str = "mean",
        nb_alpha: float = 1.0,
        ngram_dropout: float = 0.0,
        padding: str = "post",
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        _check_padding(padding)
        check_choice("weighting", weighting, WEIGHTINGS)
        check_at_least("buckets", buckets, 1)
        check_at_least("dim", dim, 1)
        if weighting == "nb" and num_classes != 2:
            raise ModelArgumentError(
                "weighting", weighting, "'mean' for more than two classes (nb compares two)"
            )
        if not nb_alpha > 0:
            raise ModelArgumentError("nb_alpha", nb_alpha, "a smoothing count > 0")
        check_probability("ngram_dropout", ngram_dropout)
        if ngram_dropout and weighting != "nb":
            raise ModelArgumentError(
                "ngram_dropout",
                ngram_dropout,
                "0.0 unless weighting='nb' (it drops distinct n-grams)",
            )
        self.ngram_dropout = float(ngram_dropout)
        self.padding = padding
        self.weighting = weighting
        self.nb_alpha = float(nb_alpha)
        self.bag = HashedNgramBag(vocab_size, buckets, dim, max_n=max_n, sparse=sparse)
        self.output_size = dim
        if weighting == "nb":
            rows = vocab_size + buckets
            self.register_buffer("nb_ratio", torch.zeros(rows))
            self.register_buffer("statistics_ready", torch.tensor(False))
            self._counts: torch.Tensor | None = None  # (2, rows) while observing

    # -- the distinct tokens and n-grams of each sequence (weighting=nb) ------------------------

    def _distinct_ids(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """``(ids, keep)``, both ``(B, M)``: every token (``id < vocab``) and n-gram
        (``vocab + bucket``) of each sequence, sorted, ``keep`` True once per distinct id."""
        bag = self.bag
        real = padding_mask(lengths, tokens.size(1), "post")
        ids, masks = [tokens.long()], [real]
        for n in range(2, bag.max_n + 1):
            if tokens.size(1) >= n:
                ids.append(bag.vocab_size + ngram_ids(tokens, n, bag.vocab_size, bag.buckets))
                masks.append(real[:, n - 1 :])
        sentinel = bag.vocab_size + bag.buckets
        ids = torch.where(torch.cat(masks, dim=1), torch.cat(ids, dim=1), sentinel)
        ids = ids.sort(dim=1).values
        first = torch.ones_like(ids, dtype=torch.bool)
        first[:, 1:] = ids[:, 1:] != ids[:, :-1]
        return ids.clamp(max=sentinel - 1), first & (ids != sentinel)

    def observe(self, tokens: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> None:
        """Count, per class, the training sequences that hold each token and n-gram."""
        tokens, lengths = self._aligned(tokens, lengths)
        ids, keep = self._distinct_ids(tokens, lengths)
        if self._counts is None:
            self._counts = torch.zeros(2, self.nb_ratio.numel(), device=ids.device)
        rows = labels.long().clamp(0, 1).unsqueeze(1).expand_as(ids)
        self._counts.index_put_((rows[keep], ids[keep]), torch.ones(()), accumulate=True)

    def finish_observing(
        self, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    ) -> None:
        """Turn the counts (summed over processes by ``reduce``) into log-count ratios."""
        if self._counts is None:
            raise RuntimeError("finish_observing() before any observe(): no training data seen")
        counts = reduce(self._counts) + self.nb_alpha
        p, q = counts[1] / counts[1].sum(), counts[0] / counts[0].sum()
        self.nb_ratio.copy_(torch.log(p / q))
        self.statistics_ready.fill_(True)
        self._counts = None

    @torch.no_grad()
    def init_after_scheme(self) -> None:
        """``weighting=nb`` starts from zero evidence (every n-gram vector 0, so the first logit is
        the bias), as the NBSVM solvers do. Measured on IMDB (uni- to trigrams, dim 1, Adam at
        1e-3): a random start (+-0.05 per row, summed over ~700 distinct n-grams per review) is
        noise the first epoch spends removing, and the best epoch scored lower."""
        if self.weighting == "nb":
            self.bag.words.weight.zero_()
            self.bag.bigrams.weight.zero_()

    @property
    def needs_statistics(self) -> bool:
        return self.weighting == "nb" and not bool(self.statistics_ready)

    # -- forward ------------------------------------------------------------------------------

    def _aligned(self, tokens: torch.Tensor, lengths: torch.Tensor):
        lengths = lengths.to(tokens.device).clamp(min=1)
        return (left_align(tokens, lengths) if self.padding == "pre" else tokens), lengths

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        tokens, lengths = self._aligned(tokens, lengths)
        if self.weighting == "mean":
            return self.bag(tokens, lengths)
        ids, keep = self._distinct_ids(tokens, lengths)
        vocab = self.bag.vocab_size
        is_word = ids < vocab
        vectors = torch.where(
            is_word.unsqueeze(-1),
            self.bag.words(ids.clamp(max=vocab - 1)),
            self.bag.bigrams((ids - vocab).clamp(min=0)),
        )
        if self.training and self.ngram_dropout:  # each distinct n-gram dropped on its own
            keep = keep & (torch.rand(keep.shape, device=keep.device) >= self.ngram_dropout)
            weights = self.nb_ratio[ids] * keep / (1.0 - self.ngram_dropout)
        else:
            weights = self.nb_ratio[ids] * keep
        return (vectors * weights.unsqueeze(-1).to(vectors.dtype)).sum(dim=1)
