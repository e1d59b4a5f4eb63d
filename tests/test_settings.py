"""``seqbench.config.settings.settings_of``: the keys a configured class takes, including those it
takes as ``**kwargs`` and hands on (an encoder's input settings, a data module's batching).

The input-kind check and the message for a key a class refuses read this list, so it must be
exactly what Python accepts: every key a shipped config gives is in it, and a key outside it
is refused by the class itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import get_class

from helpers import make_config
from seqbench.config.settings import settings_of
from seqbench.data.datamodule import SyntheticDataModule
from seqbench.data.sampling import Batching
from seqbench.models import LSTMEncoder, PooledRNNEncoder

INPUTS = ["vocab_size", "embedding_dim", "padding", "input_channels"]
CONF = Path(__file__).resolve().parents[1] / "conf"


def test_an_encoder_lists_its_base_classes_input_settings_first():
    settings = settings_of(PooledRNNEncoder)
    assert settings[:4] == INPUTS
    assert {"hidden_size", "ngram_buckets", "branch_dropout"} <= set(settings)
    assert "inputs" not in settings and len(settings) == len(set(settings))


def test_a_data_module_lists_the_batching_settings_it_hands_on():
    settings = settings_of(SyntheticDataModule)
    assert settings[:3] == ["name", "num_classes", "max_len"]
    batching = list(Batching.__dataclass_fields__)
    assert [s for s in settings if s in batching] == batching
    assert settings[-5:] == ["n_train", "n_test", "vocab_size", "min_len", "generator_seed"]
    assert "batching" not in settings and "kwargs" not in settings


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_encoder_key_a_model_config_gives_is_listed(tmp_path, model):
    encoder = make_config(tmp_path, [f"model={model}"]).model.net.encoder
    listed = settings_of(get_class(encoder._target_))
    assert set(encoder) - {"_target_"} <= set(listed), encoder._target_


@pytest.mark.parametrize("data", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_every_key_a_data_config_gives_is_listed(tmp_path, data):
    node = make_config(tmp_path, [f"data={data}"]).data
    listed = settings_of(get_class(node._target_))
    assert set(node) - {"_target_"} <= set(listed), node._target_


def test_a_key_outside_the_list_is_refused_by_the_class():
    with pytest.raises(TypeError, match="unexpected keyword argument 'heads'"):
        LSTMEncoder(vocab_size=10, heads=4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        SyntheticDataModule(batchsize=4)
