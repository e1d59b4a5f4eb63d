"""Plain ``nn.Module`` models: encoders turn token ids into a vector, a head classifies it.

They know nothing of training; ``seqbench.training.task`` owns the loss, metrics and optimiser.
"""

from seqbench.models.bag import NgramBagEncoder
from seqbench.models.classifier import SequenceClassifier
from seqbench.models.encoders import ConvLSTMEncoder, LSTMEncoder
from seqbench.models.fcn import LSTMFCNEncoder
from seqbench.models.init import INIT_SCHEMES, keras_init
from seqbench.models.pooled import PooledRNNEncoder
from seqbench.models.recurrent import KerasLSTM

__all__ = [
    "SequenceClassifier",
    "LSTMEncoder",
    "ConvLSTMEncoder",
    "PooledRNNEncoder",
    "NgramBagEncoder",
    "LSTMFCNEncoder",
    "KerasLSTM",
    "keras_init",
    "INIT_SCHEMES",
]
