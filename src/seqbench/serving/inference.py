"""Score raw text with a trained network: encode exactly as training did, batch-invariantly.

Everything here works from a *bundle* folder (written by ``save_bundle``, carried inside the
MLflow model by ``seqbench.serving.mlflow_model``): ``weights.pt`` (a plain ``state_dict``, loaded with
``torch.load(weights_only=True)``), ``net.yaml`` (the resolved ``model.net`` config, rebuilt with
``hydra.utils.instantiate``, no Hydra composition) and ``preprocessing.json`` (vocabulary,
tokenizer, ``max_len``, truncating and padding sides, label names). No dataset, no Lightning.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from seqbench.data.text import FIRST_WORD_INDEX, SIDES, TOKENIZERS, Vocabulary, tokenize, truncate
from seqbench.models.encoders import ConvLSTMEncoder, LSTMEncoder
from seqbench.serving.schema import (
    LABEL_COLUMN,
    PROB_PREFIX,
    TOKENS_COLUMN,
    TRUNCATED_COLUMN,
    check_texts,
)
from seqbench.training.parallel import BatchSplitter

WEIGHTS, NET_CONFIG, PREPROCESSING = "weights.pt", "net.yaml", "preprocessing.json"
BUNDLE_FORMAT = 1


@dataclass(frozen=True)
class Preprocessing:
    """How training turned text into indices and batches; saved beside the weights."""

    words: list[str]  # vocabulary: word at position r has index r + 3 (Keras IMDB layout)
    tokenizer: str  # word | char (seqbench.data.text.tokenize)
    max_len: int
    truncating: str  # pre | post: which end of a long text is cut
    padding: str  # pre | post, as the network was trained
    fixed_length: bool  # trained with every sequence padded to max_len (data.bucketing=false)
    labels: list[str]  # class index -> label name
    format: int = BUNDLE_FORMAT

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS or self.truncating not in SIDES:
            raise ValueError(f"bad preprocessing settings: {self.tokenizer}/{self.truncating}")
        if self.padding not in SIDES or self.max_len < 1 or len(self.labels) < 2:
            raise ValueError(f"bad preprocessing settings: {self.padding}/{self.max_len}")

    @classmethod
    def from_datamodule(cls, datamodule: Any) -> Preprocessing:
        """Read the settings of a set-up ``SequenceDataModule``.

        Corpora without words (``data=synthetic``) get a numeric vocabulary: token id ``i`` is
        written as the word ``"i"``, so ``"5 3 9"`` encodes to ``[START, 5, 3, 9]``."""
        corpus = datamodule.corpus
        if corpus is None:
            raise ValueError("the datamodule is not set up (no corpus)")
        if corpus.vocab is not None:
            words = list(corpus.vocab.words)
        else:
            task = getattr(datamodule, "task", None)  # SyntheticDataModule's generator
            size = task.vocab_size if task is not None else getattr(datamodule, "vocab_size", None)
            if size is None:
                raise ValueError(
                    f"the {datamodule.name} corpus has no vocabulary and no vocab_size: "
                    "cannot write down how text is encoded"
                )
            words = [str(i) for i in range(FIRST_WORD_INDEX, int(size))]
        return cls(
            words=words,
            tokenizer=str(getattr(datamodule, "tokenizer", "word")),
            max_len=int(datamodule.max_len),
            truncating=str(getattr(datamodule, "truncating", "pre")),
            padding=str(datamodule.padding),
            fixed_length=not datamodule.batching.bucketing,
            labels=[str(c) for c in corpus.classes],
        )


def save_bundle(folder: Path, net: nn.Module, net_config: dict, prep: Preprocessing) -> Path:
    """Write weights, network config and preprocessing to ``folder`` (the MLflow artifact)."""
    from omegaconf import OmegaConf

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}
    torch.save(state, folder / WEIGHTS)
    (folder / NET_CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(net_config)))
    (folder / PREPROCESSING).write_text(json.dumps(asdict(prep), ensure_ascii=False))
    return folder


@dataclass
class Encoded:
    """One text as the network sees it, plus what a reader needs to trust the score."""

    ids: Sequence[int]
    tokens: int  # words (or characters) in the text, before truncation
    truncated: bool


class Predictor:
    """A network and its preprocessing: raw strings -> label names and class probabilities."""

    def __init__(
        self,
        net: nn.Module,
        prep: Preprocessing,
        device: str = "cpu",
        splitter: BatchSplitter | None = None,
    ) -> None:
        self.prep = prep
        self.device = torch.device(device)
        # CPU only: each batch's slices scored in parallel threads, one per core (seqbench.training.parallel);
        # a row's score does not depend on its batch, so slicing changes no result.
        self.splitter = splitter
        self.net = net.to(self.device).eval()
        self.padding = self._scoring_padding(prep)
        for module in self.net.modules():  # the encoders read their padding side at forward
            if isinstance(module, (LSTMEncoder, ConvLSTMEncoder)):
                module.padding = self.padding
        self.vocab = Vocabulary(tuple(prep.words))
        self._lookup = self.vocab.index()

    @staticmethod
    def _scoring_padding(prep: Preprocessing) -> str:
        """How texts are padded for scoring, chosen so that no text's score ever depends on the
        other texts in its batch.

        ``post``: the network reads each text's state at its last real token, and the pads
        after it are invisible (``seqbench.models.recurrent``); batches of any lengths are fine.

        ``pre``: the pads come first and run through the LSTM, so they would change the score.
        A model trained with fixed-length batches (``data.bucketing=false``, the seeds) saw
        every text padded to ``max_len``: it is scored the same way (what Keras does at
        inference). A model trained on length-bucketed batches (the default) saw almost no
        padding, so each text is scored with *none*. A ``pre`` network run on an unpadded text
        computes exactly what the same network in ``post`` mode computes on that text followed
        by pads (forward LSTM from a zero state over the tokens, state read at the last token;
        backward LSTM over the tokens reversed; for the CNN, pads zeroed like the conv's own
        zero padding): so such a model is scored in ``post`` mode, in length-sorted batches,
        instead of in batches of identical length only (tests check both equalities).
        """
        return "pre" if prep.padding == "pre" and prep.fixed_length else "post"

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> Predictor:
        """Rebuild the network from ``net.yaml`` and load ``weights.pt`` with ``weights_only``."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        folder = Path(folder)
        prep = Preprocessing(**json.loads((folder / PREPROCESSING).read_text()))
        net = instantiate(OmegaConf.load(folder / NET_CONFIG))
        state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        return cls(net, prep, device)

    @property
    def labels(self) -> list[str]:
        return list(self.prep.labels)

    @property
    def probability_columns(self) -> list[str]:
        return [f"{PROB_PREFIX}{label}" for label in self.prep.labels]

    def encode(self, text: str) -> Encoded:
        """As ``seqbench.data.corpus.encode_corpus``: tokenise, start token + indices (unknown
        words -> OOV), then cut to ``max_len`` on the trained ``truncating`` side. An empty or
        blank text is the start token alone, exactly what training would have made of it."""
        tokens = tokenize(text, self.prep.tokenizer)
        ids = self.vocab.encode(tokens, self._lookup)
        return Encoded(
            truncate(ids, self.prep.max_len, self.prep.truncating),
            len(tokens),
            len(ids) > self.prep.max_len,
        )

    @property
    def pads_everything(self) -> bool:
        """Pad every text to ``max_len`` (a ``pre``-padded model trained on fixed-length batches)."""
        return self.prep.padding == "pre" and self.prep.fixed_length

    def batches(self, lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
        """Index batches of texts sorted by length (least padding), ``batch_size`` at most."""
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def _pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens[B, W], lengths[B])``: ``W`` the longest sequence, or ``max_len`` when
        every text is padded to it. Filled with one vectorised assignment: in row-major order
        the real positions of both padding sides come in the sequences' own order."""
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        width = self.prep.max_len if self.pads_everything else int(lengths.max())
        steps = np.arange(width)[None, :]
        if self.padding == "post":
            real = steps < lengths[:, None]
        else:
            real = steps >= width - lengths[:, None]
        tokens = np.zeros((len(seqs), width), dtype=np.int64)
        tokens[real] = np.fromiter(
            itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum())
        )
        return torch.from_numpy(tokens), torch.from_numpy(lengths)

    @torch.inference_mode()
    def probabilities(
        self,
        encoded: Sequence[Sequence[int]],
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """``(n, classes)`` float64 probabilities for encoded sequences (float32 forward pass)."""
        n_classes = len(self.prep.labels)
        out = np.zeros((len(encoded), n_classes), dtype=np.float64)
        for index in self.batches([len(s) for s in encoded], batch_size):
            tokens, lengths = self._pad([encoded[i] for i in index])
            tokens, lengths = tokens.to(self.device), lengths.to(self.device)
            if self.splitter is not None:
                logits = self.splitter(self.net, tokens, lengths).float()
            else:
                logits = self.net(tokens, lengths).float()
            if n_classes == 2:
                positive = torch.sigmoid(logits).double().cpu().numpy()
                out[index, 1] = positive
                out[index, 0] = 1.0 - positive
            else:
                out[index] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
            if progress is not None:
                progress(len(index))
        return out

    def predict(
        self,
        texts: Iterable[Any],
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> pd.DataFrame:
        """One row per text: ``label``, ``prob_<label>`` per class, ``tokens``, ``truncated``."""
        texts = check_texts(texts)
        encoded = [self.encode(t) for t in texts]
        probs = self.probabilities([e.ids for e in encoded], batch_size, progress)
        frame = pd.DataFrame(probs, columns=self.probability_columns)
        labels = np.asarray(self.prep.labels, dtype=object)
        frame.insert(0, LABEL_COLUMN, labels[probs.argmax(axis=1)] if len(texts) else [])
        frame[TOKENS_COLUMN] = np.array([e.tokens for e in encoded], dtype=np.int64)
        frame[TRUNCATED_COLUMN] = np.array([e.truncated for e in encoded], dtype=bool)
        return frame
