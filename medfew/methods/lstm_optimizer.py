"""A learned inner optimiser: a coordinatewise LSTM (Andrychowicz et al., NeurIPS 2016).

One small LSTM is shared by every scalar of every adapted tensor; each scalar (coordinate) keeps its
own hidden state across the inner steps. Its input is the gradient preprocessed as in Andrychowicz
et al. (appendix A), which keeps gradients of any magnitude in a range an LSTM reads well:

    |g| >= exp(-p):  (log|g| / p, sign(g))        otherwise:  (-1, exp(p) * g)

with ``p = 10``. A linear read-out of the hidden state gives two numbers ``(a, b)`` per coordinate,
and the update is

    delta = -lr * (exp(a) * g + s * b)

a learned, history-dependent step size per coordinate (as the input gate of Ravi & Larochelle 2017)
plus a free-form correction scaled by ``s`` (``output_scale``). The read-out starts at zero, so the
untrained rule is exactly SGD with rate ``lr`` (``exp(0) = 1``, ``b = 0``): meta-training starts from
MAML and moves away from it only where that lowers the query loss.

Everything is plain tensor math (no ``nn.LSTM`` kernels), so the rule is differentiable to second
order, works under ``torch.func.vmap`` and under reentrant checkpointing (it reads only its inputs and
its own leaf parameters).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medfew.methods.inner_optimizers import InnerOptimizer, OptState, Params
from medfew.models.checks import check_int, check_positive

TINY = 1e-30  # floor inside the log: the branch it guards is masked out, but its gradient must stay finite


def preprocess_gradients(grads: torch.Tensor, p: float) -> torch.Tensor:
    """Andrychowicz et al.'s gradient preprocessing.

    Args:
        grads: ``(n,)`` gradient coordinates.
        p: The threshold exponent (``10`` in the paper).

    Returns:
        ``(n, 2)``: ``(log|g| / p, sign g)`` where ``|g| >= exp(-p)``, else ``(-1, exp(p) g)``.
    """
    big = grads.abs() >= math.exp(-p)
    scaled_log = grads.abs().clamp_min(TINY).log() / p
    first = torch.where(big, scaled_log, -torch.ones_like(grads))
    second = torch.where(big, grads.sign(), math.exp(p) * grads)
    return torch.stack([first, second], dim=-1)


class LSTMOptimizer(InnerOptimizer):
    """The coordinatewise LSTM update rule.

    Args:
        lr: Base rate ``lr`` of the update (the method's ``inner_lr``).
        hidden: LSTM hidden size per coordinate (20 in Andrychowicz et al.).
        preprocess_p: ``p`` of the gradient preprocessing.
        output_scale: ``s``, the scale of the free-form part of the update (in gradient units).
        owner: The method's name, for error messages.

    Attributes:
        input_gates: ``(2) -> (4 H)`` input-to-gates map (with the gates' bias; forget bias 1).
        hidden_gates: ``(H) -> (4 H)`` hidden-to-gates map.
        readout: ``(H) -> (2)``, zero-initialised: ``(a, b)`` of the update.
    """

    kind = "lstm"

    def __init__(
        self, lr: float, hidden: int = 20, preprocess_p: float = 10.0, output_scale: float = 0.01, *, owner: str = "lstm"
    ) -> None:
        super().__init__()
        self.lr = check_positive(owner, "inner_lr", lr)
        self.hidden = check_int(owner, "lstm_hidden", hidden, 1)
        self.preprocess_p = check_positive(owner, "lstm_preprocess_p", preprocess_p)
        self.output_scale = check_positive(owner, "lstm_output_scale", output_scale)
        self.input_gates = nn.Linear(2, 4 * self.hidden)
        self.hidden_gates = nn.Linear(self.hidden, 4 * self.hidden, bias=False)
        self.readout = nn.Linear(self.hidden, 2)
        with torch.no_grad():
            self.input_gates.bias[self.hidden : 2 * self.hidden].fill_(1.0)  # forget gate open at the start
            self.readout.weight.zero_()
            self.readout.bias.zero_()

    def init_state(self, params: Params) -> OptState:
        """Zero ``(h, c)``, each ``(numel, H)``, per adapted tensor."""
        return {k: (p.new_zeros(p.numel(), self.hidden), p.new_zeros(p.numel(), self.hidden)) for k, p in params.items()}

    def cell(
        self, grads: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One LSTM step for ``n`` coordinates.

        Args:
            grads: ``(n,)`` gradients.
            h: ``(n, H)`` hidden state.
            c: ``(n, H)`` cell state.

        Returns:
            ``(n,)`` update ``delta`` and the new ``(n, H)`` hidden and cell states.
        """
        gates = self.input_gates(preprocess_gradients(grads, self.preprocess_p)) + self.hidden_gates(h)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        a, b = self.readout(h).unbind(-1)
        return -(self.lr * (torch.exp(a) * grads + self.output_scale * b)), h, c

    def step(self, params: Params, grads: Params, state: OptState) -> tuple[Params, OptState]:
        """``theta <- theta + delta`` for every coordinate of every adapted tensor."""
        new_params, new_state = {}, {}
        for k, p in params.items():
            delta, h, c = self.cell(grads[k].reshape(-1), *state[k])
            new_params[k] = p + delta.reshape(p.shape)
            new_state[k] = (h, c)
        return new_params, new_state

    def extra_repr(self) -> str:
        return f"lr={self.lr}, hidden={self.hidden}, p={self.preprocess_p}, output_scale={self.output_scale}"
