"""An encoder plus a linear head: the models of the comparison."""

from __future__ import annotations

import torch
from torch import nn

from seqbench.models.arguments import check_probability
from seqbench.models.init import apply_init
from seqbench.models.randomness import Dropout


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class SequenceClassifier(nn.Module):
    """``encoder`` -> Dropout(``dropout``) -> Linear to one logit (2 classes) or ``num_classes``.

    Initialised with ``init`` (``keras``, the seeds' scheme and the default, or ``torch``).
    """

    def __init__(
        self, encoder: nn.Module, num_classes: int = 2, dropout: float = 0.0, init: str = "keras"
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        check_probability("dropout", dropout)
        self.encoder = encoder
        self.num_classes = num_classes
        self.dropout = Dropout(dropout)
        self.head = nn.Linear(encoder.output_size, 1 if num_classes == 2 else num_classes)
        apply_init(self, init)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits: ``(B,)`` for two classes, ``(B, num_classes)`` otherwise."""
        logits = self.head(self.dropout(self.encoder(tokens, lengths)))
        return logits.squeeze(-1) if self.num_classes == 2 else logits
