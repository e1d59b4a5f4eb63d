"""LSTM layers that handle padding explicitly and Keras-style dropout.

Padding modes (``data.padding``):

* ``pre`` (Keras-faithful): pads come first and are fed through the LSTM, as in the seeds;
  the final state is the last time step; the backward direction reads the whole padded
  sequence reversed (Keras ``go_backwards``).
* ``post`` (fast path): pads come last, the state is read at each sequence's true last token
  (a gather), and the backward direction reads the real tokens reversed *within their
  length*. The pads can then never influence a prediction, so a review scores the same alone
  or in a batch with longer reviews. No ``pack_padded_sequence``: packing is ~7x slower than
  padding on CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from seqbench.models.arguments import check_probability
from seqbench.models.randomness import keep_mask


def last_step(outputs: torch.Tensor, lengths: torch.Tensor, padding: str) -> torch.Tensor:
    """Output at each sequence's last real token: ``outputs[b, len_b - 1]`` (post) or ``[:, -1]`` (pre)."""
    if padding == "pre":
        return outputs[:, -1]
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, outputs.size(-1))
    return outputs.gather(1, index.to(outputs.device)).squeeze(1)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor, padding: str) -> torch.Tensor:
    """Reverse time; with ``post`` padding only the first ``len_b`` steps of each row, pads stay put."""
    if padding == "pre":
        return x.flip(1)
    steps = torch.arange(x.size(1), device=x.device).unsqueeze(0)
    lengths = lengths.to(x.device).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


def padding_mask(lengths: torch.Tensor, width: int, padding: str) -> torch.Tensor:
    """``(B, width)`` boolean mask, True on real tokens."""
    steps = torch.arange(width, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    return steps < lengths if padding == "post" else steps >= width - lengths


class KerasLSTM(nn.Module):
    """One LSTM layer (batch first) with Keras's ``dropout`` and ``recurrent_dropout``.

    Keras draws one mask per sequence for the inputs and one for the recurrent state h(t-1)
    and reuses them at every step; both are off in eval. ``nn.LSTM(dropout=...)`` is a
    different thing (between stacked layers). Without recurrent dropout (or in eval) the fused
    ``nn.LSTM`` kernel runs; with it, an explicit loop over time applies the state mask.
    The parameters are those of an ``nn.LSTM``, so initialisation and counts match it.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, p in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            check_probability(name, p)
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout

    def input_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """One ``(B, 1, in)`` input mask per sequence, or None when input dropout is inactive."""
        if not (self.training and self.dropout > 0):
            return None
        return keep_mask((x.size(0), 1, x.size(2)), self.dropout, x)

    def recurrent_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """One ``(B, H)`` mask on h(t-1) per sequence, or None when recurrent dropout is inactive."""
        if not (self.training and self.recurrent_dropout > 0):
            return None
        return keep_mask((x.size(0), self.hidden_size), self.recurrent_dropout, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, in) -> (B, T, H)``: the hidden state at every step."""
        in_mask = self.input_mask(x)
        if in_mask is not None:
            x = x * in_mask
        rec_mask = self.recurrent_mask(x)
        if rec_mask is None:
            return self.lstm(x)[0]
        return self._loop(x, rec_mask)

    def _loop(self, x: torch.Tensor, rec_mask: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: bf16 casts at every step made this loop slower, not
        # faster (126 vs 99 ms per batch-64 step on the benchmark CPU), and keep h exact.
        with torch.autocast(x.device.type, enabled=False):
            return self._loop_fp32(x.float(), rec_mask.float())

    def _loop_fp32(self, x: torch.Tensor, rec_mask: torch.Tensor) -> torch.Tensor:
        lstm = self.lstm
        # Input projections for all steps in one matmul; only the recurrent part loops.
        gates_x = torch.nn.functional.linear(
            x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
        )
        h = x.new_zeros(x.size(0), self.hidden_size)
        c = torch.zeros_like(h)
        w_hh = lstm.weight_hh_l0
        outputs = []
        # unbind, not gates_x[:, t]: the backward of T slices would build T full-size zero
        # gradients (O(T^2) work, 70% of the step); unbind's backward is one stack.
        for gates_t in gates_x.unbind(1):
            gates = torch.addmm(gates_t, h * rec_mask, w_hh.t())
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class RecurrentLayer(nn.Module):
    """A (optionally bidirectional) ``KerasLSTM`` that respects the padding mode."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bidirectional: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.forward_lstm = KerasLSTM(input_size, hidden_size, dropout, recurrent_dropout)
        self.backward_lstm = (
            KerasLSTM(input_size, hidden_size, dropout, recurrent_dropout)
            if bidirectional
            else None
        )
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, padding: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (per-step outputs ``(B, T, out)``, final state ``(B, out)``)."""
        fwd = self.forward_lstm(x)
        final = last_step(fwd, lengths, padding)
        if self.backward_lstm is None:
            return fwd, final
        bwd_rev = self.backward_lstm(reverse_padded(x, lengths, padding))
        bwd_final = last_step(bwd_rev, lengths, padding)
        bwd = reverse_padded(bwd_rev, lengths, padding)  # align step t with the forward output
        return torch.cat([fwd, bwd], dim=-1), torch.cat([final, bwd_final], dim=-1)
