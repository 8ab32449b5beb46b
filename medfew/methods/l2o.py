"""Learning to optimise: MAML whose inner update is produced by a coordinatewise LSTM.

``l2o`` is the MAML family constructor with ``inner_optimizer="lstm"`` (Andrychowicz et al., NeurIPS
2016: one small LSTM shared by every scalar, gradients preprocessed with ``p = 10``; see
:mod:`medfew.methods.lstm_optimizer`). The LSTM is meta-trained in the one training loop together
with the backbone and the Proto-MAML head initialisation, through the inner steps (second order) or,
with ``first_order=True``, through its updates only (the inner gradients are then constants, as in
the paper's truncated training). Its weights are ``inner_optimizer.*`` in the method's ``state_dict``,
hence in every checkpoint. The untrained LSTM is exactly SGD with ``inner_lr``, so training starts
from MAML.
"""

from __future__ import annotations

from typing import Any, ClassVar

from medfew.methods.maml import MAML
from medfew.methods.registry import register_method


@register_method("l2o")
class L2O(MAML):
    """:class:`~medfew.methods.maml.MAML` with the learned LSTM update rule (``inner_optimizer`` fixed to
    ``"lstm"``; ``learn_inner_lr`` is refused). ``lstm_hidden`` (default 20) and ``lstm_preprocess_p``
    (default 10) size the LSTM and its gradient preprocessing.
    """

    PRESET: ClassVar[dict[str, Any]] = {"inner_optimizer": "lstm"}
    REFUSED: ClassVar[tuple[str, ...]] = ("learn_inner_lr",)
