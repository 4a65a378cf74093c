"""The hook points: every step the forward pass taps, with its shape, read from the code.

``hook_points(config)`` runs the forward pass once on a tiny zero-weight model and lists what
went through ``tap``; ``minibert hooks`` prints the list, and the hook table in
``docs/debugging.md`` is generated from it (``cli.py``, next to that command).
"""

from dataclasses import replace

import numpy as np

from .model import BertModel
from .weights import encoder_shapes

__all__ = ["hook_points"]

# Distinct small sizes, so that each number in a captured shape names one axis.
_SYMBOLIC_SIZES = {"B": 2, "T": 3, "A": 5, "D": 7, "I": 11}


def hook_points(config) -> list:
    """[(name, symbolic shape)] of every step the forward pass taps, in execution order.

    Runs the forward pass once on a tiny model with ``config``'s layer count and zero
    weights, with every axis a distinct size, and reads each shape back as letters:
    ``("encoder.layer.0.attention.self.probs", "[B, A, T, T]")``.
    """
    s = _SYMBOLIC_SIZES
    tiny = replace(
        config, hidden_size=s["A"] * s["D"], num_attention_heads=s["A"], intermediate_size=s["I"],
        vocab_size=13, max_position_embeddings=17, type_vocab_size=2, id2label={},
    )
    letters = {1: "1", s["B"]: "B", s["T"]: "T", s["A"]: "A", s["D"]: "D", s["A"] * s["D"]: "H", s["I"]: "I"}
    weights = {n: np.zeros(shape, np.float32) for n, shape in encoder_shapes(tiny).items()}
    model = BertModel(tiny, weights, backend="numpy")
    seen = []
    model(np.zeros((s["B"], s["T"]), np.int64), tap=lambda name, value: seen.append((name, value.shape)) or value)
    return [(name, "[" + ", ".join(letters[n] for n in shape) + "]") for name, shape in seen]
