"""The math of BERT in plain NumPy: small pure functions, the readable reference.

Every function takes and returns NumPy arrays and says its shapes. ``kernels.py`` holds
Numba twins of some of these functions with the same signatures; tests hold the two equal.

Axis legend (as in Google's original modeling.py):
    B = batch size           T = sequence length        H = hidden size
    A = attention heads      D = head size = H // A     I = intermediate (feed-forward) size
    V = vocabulary size      P = max positions          S = token types (segments)
"""

import math

import numpy as np

__all__ = [
    "linear", "layer_norm", "add_layer_norm", "erf", "gelu", "tanh", "softmax",
    "embedding", "position_ids",
    "split_heads", "merge_heads", "attention_mask_bias", "attention_scores", "masked_softmax",
    "attention_context",
]

# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def linear(x, weight, bias):  # [..., in] -> [..., out]
    """A PyTorch ``nn.Linear``: the weight is stored [out, in], so we multiply by its transpose."""
    return x @ weight.T + bias  # [..., in] @ [in, out] + [out] -> [..., out]


def layer_norm(x, weight, bias, eps):  # [..., H] -> [..., H]
    """LayerNorm over the last axis with the biased variance, as ``torch.nn.LayerNorm``."""
    mean = x.mean(-1, keepdims=True)  # [..., 1]
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # [..., 1], biased (divide by H)
    return (x - mean) / np.sqrt(var + eps) * weight + bias  # [..., H]


def add_layer_norm(x, residual, weight, bias, eps):  # [..., H], [..., H] -> [..., H]
    """The residual connection followed by LayerNorm: ``LayerNorm(x + residual)``."""
    return layer_norm(x + residual, weight, bias, eps)


# NumPy has no erf. math.erf is the C library's erf, applied here element by element: slow,
# but exactly the function transformers' exact GELU uses. kernels.gelu is the fast twin.
_erf_elementwise = np.frompyfunc(math.erf, 1, 1)


def erf(x):  # [...] -> [...]
    return _erf_elementwise(x).astype(x.dtype)


def gelu(x):  # [...] -> [...]
    """Exact GELU (not the tanh approximation): x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def tanh(x):  # [...] -> [...]
    """The pooler's activation (``nn.Tanh``)."""
    return np.tanh(x)


def softmax(x):  # [..., N] -> [..., N]
    """Softmax over the last axis; subtracting the row max keeps exp() from overflowing."""
    e = np.exp(x - x.max(-1, keepdims=True))  # [..., N]
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------


def embedding(ids, table):  # [B, T] int, [N, H] -> [B, T, H]
    """Look up one row of the table per id (a PyTorch ``nn.Embedding``)."""
    return table[ids]


def position_ids(seq_length):  # -> [1, T]
    """BERT's absolute positions 0, 1, ..., T-1, shared by every row of the batch."""
    return np.arange(seq_length)[None, :]


# ---------------------------------------------------------------------------------------
# Self-attention
# ---------------------------------------------------------------------------------------


def split_heads(x, num_heads):  # [B, T, H] -> [B, A, T, D]
    B, T, H = x.shape
    return x.reshape(B, T, num_heads, H // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):  # [B, A, T, D] -> [B, T, H]
    B, A, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, A * D)


def attention_mask_bias(attention_mask, dtype):  # [B, T] of 0/1 -> [B, 1, 1, T]
    """The additive padding mask of transformers 5.x eager attention.

    0 where a key may be attended to, ``finfo(dtype).min`` where it is padding. Added to the
    scaled scores, it drives masked keys' probabilities to exactly 0. If every key of a row is
    masked, each score becomes ``finfo.min`` (the scores are far below its rounding step), so
    softmax gives a uniform 1/T row, as transformers does, never NaN.
    """
    keep = attention_mask[:, None, None, :].astype(bool)  # [B, 1, 1, T]
    return np.where(keep, dtype.type(0), np.finfo(dtype).min).astype(dtype)


def attention_scores(query, key, scale):  # [B, A, T, D], [B, A, T, D] -> [B, A, T, T]
    """Scaled dot products Q K^T / sqrt(D): how much each query looks at each key."""
    return (query @ key.transpose(0, 1, 3, 2)) * scale


def masked_softmax(scores, mask_bias):  # [B, A, T, T], [B, 1, 1, T] -> [B, A, T, T]
    """Add the padding mask to the scaled scores, then softmax over the keys."""
    return softmax(scores + mask_bias)


def attention_context(probs, value):  # [B, A, T, T], [B, A, T, D] -> [B, A, T, D]
    """Each query's output: the probability-weighted sum of the values."""
    return probs @ value
