"""What a network reads: token ids through an embedding, or numeric channels through a projection.

The data module says what it gives (``input_kind``: ``tokens``, the default, or ``numeric`` with
``channels``); ``seqbench-train`` checks that the model can take it *before* reading any data
(``check_input_kind``) and then tells the encoder its channel count (``adapt_to_data``), so
``model=lstm data=ucr data.name=BasicMotions`` works without editing a config. An encoder takes
numeric input when its settings (``seqbench.config.settings``, its base classes' included) have
``input_channels``, and tokens when they have ``vocab_size``; token-only parts (the bag of
n-grams) and numeric-only models (LSTM-FCN) are refused with one message naming the models that
fit.
"""

from __future__ import annotations

from omegaconf import DictConfig, open_dict
from torch import nn

from seqbench.config.settings import settings_of

INPUT_KINDS = ("tokens", "numeric")


class InputKindError(ValueError):
    """The model cannot read what the data gives (tokens vs numeric series)."""


def input_layer(vocab_size: int | None, input_channels: int | None, dim: int) -> nn.Module:
    """``nn.Embedding(vocab_size, dim)`` for token ids ``(B, T)``, or, given ``input_channels``,
    ``nn.Linear(input_channels, dim)`` for numeric steps ``(B, T, channels)``: either way the
    layers after it see ``(B, T, dim)``."""
    if input_channels:
        return nn.Linear(int(input_channels), dim)
    if not vocab_size:
        raise InputKindError("an encoder needs vocab_size (token ids) or input_channels (numeric)")
    return nn.Embedding(int(vocab_size), dim)


def data_input_kind(cfg: DictConfig) -> str:
    kind = str(cfg.data.get("input_kind", "tokens"))
    if kind not in INPUT_KINDS:
        raise InputKindError(f"data.input_kind={kind!r}; valid choices: {', '.join(INPUT_KINDS)}")
    return kind


def _accepts(encoder_cfg: DictConfig) -> set[str]:
    from hydra.utils import get_class

    parameters = settings_of(get_class(encoder_cfg._target_))
    kinds = set()
    if "vocab_size" in parameters:
        kinds.add("tokens")
    if "input_channels" in parameters and not encoder_cfg.get("ngram_buckets"):
        kinds.add("numeric")
    return kinds


def check_input_kind(cfg: DictConfig) -> None:
    """Refuse, before any data is read, a model that cannot read the data's kind of input."""
    kind = data_input_kind(cfg)
    encoder = cfg.model.net.get("encoder")
    if encoder is None or "_target_" not in encoder:
        return
    accepted = _accepts(encoder)
    if kind in accepted:
        return
    arch = cfg.model.get("arch", "?")
    if kind == "numeric":
        why = (
            "its bag of words and bigrams needs token ids"
            if encoder.get("ngram_buckets")
            else "it only reads token ids"
        )
        raise InputKindError(
            f"model={arch} cannot read numeric series (data.input_kind=numeric): {why}. For "
            "numeric data use model=lstm, bilstm, lstm_dropout, lstm_recurrent_dropout, "
            "stacked_lstm, cnn_lstm, bilstm_pool, bigru_pool, lstm_fcn or mlstm_fcn"
        )
    raise InputKindError(
        f"model={arch} reads numeric series only, and data={cfg.data.get('name', '?')} gives "
        "token ids (text). Use it with data=ucr or data=series; for text use model=lstm, "
        "bilstm, cnn_lstm, bilstm_pool, ..."
    )


def adapt_to_data(cfg: DictConfig, datamodule: object) -> None:
    """Tell the model what a set-up numeric data module gives: ``input_channels`` on the
    encoder config (so the job key, the logged config and the served model all carry it).
    Token data leaves the config untouched (its job keys stay as they were)."""
    if getattr(datamodule, "input_kind", "tokens") != "numeric":
        return
    with open_dict(cfg):
        cfg.model.net.encoder.input_channels = int(datamodule.channels)
