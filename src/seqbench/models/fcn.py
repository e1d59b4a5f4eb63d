"""LSTM-FCN and MLSTM-FCN (Karim et al. 2018, 2019) for numeric series, masked by length.

Two branches read the series side by side and their vectors are concatenated before the head:

* an LSTM over the raw channels (final state at each series' last real step),
  followed by dropout (the papers: 0.8);
* a fully convolutional network: three blocks Conv1d (128/256/128 filters, kernels 8/5/3,
  ``same`` padding) + batch normalisation + ReLU, with squeeze-and-excite after the first two
  blocks in the multivariate variant (MLSTM-FCN), then global average pooling over time.

Departure from the papers, for variable lengths and batch invariance: the originals feed the
LSTM a *dimension-shuffled* input (the whole series as one step of ``length`` features, or the
channels as steps), which only exists for one fixed length; here the LSTM reads the series
along time. Padding is invisible everywhere: the conv inputs and outputs past each length are
zeroed (the same zeros as the conv's own padding), batch normalisation takes its training
statistics over real steps only, and squeeze-and-excite and the average pool average over real
steps only. So a series scores the same alone and beside a much longer one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seqbench.models.randomness import Dropout
from seqbench.models.recurrent import last_step, padding_mask


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over ``(B, C, T)`` whose training statistics count only the real steps."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``mask``: ``(B, 1, T)`` float, 1 on real steps."""
        if not self.training:
            return super().forward(x)
        count = mask.sum().clamp(min=1.0)
        mean = (x * mask).sum(dim=(0, 2)) / count
        var = (((x - mean[None, :, None]) * mask) ** 2).sum(dim=(0, 2)) / count
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            unbiased = var * count / (count - 1).clamp(min=1.0)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * unbiased)
            self.num_batches_tracked += 1
        x = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        return x * self.weight[None, :, None] + self.bias[None, :, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, C, T)`` -> ``(B, C)``: the mean over real steps."""
    return (x * mask).sum(dim=2) / mask.sum(dim=2).clamp(min=1.0)


class SqueezeExcite(nn.Module):
    """Channel gates from the masked time average (Hu et al. 2018), reduction ``ratio``."""

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // ratio)
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.expand(torch.relu(self.reduce(masked_mean(x, mask)))))
        return x * gates.unsqueeze(-1)


class ConvBlock(nn.Module):
    """Conv1d (same padding) -> masked BatchNorm -> ReLU -> zero the pads [-> squeeze-excite]."""

    def __init__(self, inputs: int, filters: int, kernel: int, squeeze_excite: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(inputs, filters, kernel, padding="same")
        self.norm = MaskedBatchNorm1d(filters, eps=1e-3)  # torch momentum 0.1: short schedules
        self.se = SqueezeExcite(filters) if squeeze_excite else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(x), mask)) * mask
        return self.se(x, mask) if self.se is not None else x


class LSTMFCNEncoder(nn.Module):
    """``(B, T, channels)`` numeric steps and lengths -> ``[LSTM state, pooled FCN features]``.

    ``squeeze_excite=True`` is MLSTM-FCN. Numeric input only: it has no embedding to read
    token ids (``seqbench.models.inputs`` refuses text data for it before any run)."""

    def __init__(
        self,
        input_channels: int,
        hidden_size: int = 64,
        lstm_dropout: float = 0.8,
        filters: Sequence[int] = (128, 256, 128),
        kernel_sizes: Sequence[int] = (8, 5, 3),
        squeeze_excite: bool = False,
        padding: str = "post",
    ) -> None:
        super().__init__()
        if padding != "post":
            raise ValueError("LSTM-FCN reads post-padded series (data.padding=post)")
        if len(filters) != len(kernel_sizes) or not filters:
            raise ValueError("filters and kernel_sizes need the same, non-zero, number of blocks")
        self.lstm = nn.LSTM(input_channels, hidden_size, batch_first=True)
        self.lstm_dropout = Dropout(lstm_dropout)
        blocks, width = [], input_channels
        for i, (f, k) in enumerate(zip(filters, kernel_sizes, strict=True)):
            last = i == len(filters) - 1
            blocks.append(ConvBlock(width, int(f), int(k), squeeze_excite and not last))
            width = int(f)
        self.blocks = nn.ModuleList(blocks)
        self.output_size = hidden_size + width

    def forward(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(values.device).clamp(min=1)
        mask = padding_mask(lengths, values.size(1), "post").unsqueeze(1).to(values.dtype)
        values = values * mask.transpose(1, 2)
        state = self.lstm_dropout(last_step(self.lstm(values)[0], lengths, "post"))
        x = values.transpose(1, 2)  # (B, C, T)
        for block in self.blocks:
            x = block(x, mask)
        return torch.cat([state, masked_mean(x, mask)], dim=-1)
