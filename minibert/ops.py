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
    # the other hidden_act values (config.SUPPORTED_ACTIVATIONS), each with its backward
    "sigmoid", "gelu_new", "gelu_new_backward", "gelu_pytorch_tanh", "gelu_pytorch_tanh_backward",
    "gelu_fast", "gelu_fast_backward", "quick_gelu", "quick_gelu_backward", "relu", "relu_backward",
    "silu", "silu_backward", "swish", "swish_backward", "tanh_backward",
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


# ---------------------------------------------------------------------------------------
# The other activations a BERT config may name (hidden_act; the list is
# config.SUPPORTED_ACTIVATIONS). Each function has the name of its hidden_act, and its
# backward sits beside it: ``<name>_backward(dy, x) -> dx``, dy and dx of x's shape, the
# derivative in the docstring. gelu_backward (exact GELU) is with the training code's
# backward functions.
# ---------------------------------------------------------------------------------------

# The tanh approximation of GELU (Hendrycks & Gimpel, 2016), the one Google's BERT computes:
# Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)  # sqrt(2/pi) = 0.7978845608...
GELU_TANH_CUBIC = 0.044715
GELU_FAST_SCALE = 0.7978845608  # gelu_fast's sqrt(2/pi), rounded to 10 digits (as transformers)
QUICK_GELU_SCALE = 1.702  # quick_gelu: Phi(x) ~ sigmoid(1.702 x)


def sigmoid(x):  # [...] -> [...]
    """1 / (1 + exp(-x)); exp overflows to inf for x < -88 (float32), which correctly gives 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def gelu_new(x):  # [...] -> [...]
    """tanh GELU: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).

    What Google's TensorFlow BERT computes under the name "gelu" (and GPT-2); transformers
    calls it "gelu_new". Differs from the exact GELU by at most ~5e-4 (near |x| = 2).
    """
    u = GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * x ** 3)  # [...]
    return 0.5 * x * (1.0 + np.tanh(u))


def gelu_new_backward(dy, x):  # [...], [...] -> [...]
    """d/dx 0.5 x (1 + tanh u) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx,
    du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    t = np.tanh(GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * x ** 3))  # [...], tanh u
    du = GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x)  # [...], du/dx
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


# transformers' "gelu_pytorch_tanh" is torch.nn.functional.gelu(x, approximate="tanh"): the same
# formula as gelu_new, computed by torch's fused kernel (results differ in the last float32 bit).
gelu_pytorch_tanh = gelu_new
gelu_pytorch_tanh_backward = gelu_new_backward


def gelu_fast(x):  # [...] -> [...]
    """transformers' "gelu_fast": 0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2)))."""
    u = GELU_FAST_SCALE * x * (1.0 + GELU_TANH_CUBIC * x * x)  # [...]
    return 0.5 * x * (1.0 + np.tanh(u))


def gelu_fast_backward(dy, x):  # [...], [...] -> [...]
    """As gelu_new_backward with sqrt(2/pi) rounded: du/dx = 0.7978845608 (1 + 3 * 0.044715 x^2)."""
    t = np.tanh(GELU_FAST_SCALE * x * (1.0 + GELU_TANH_CUBIC * x * x))  # [...]
    du = GELU_FAST_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x)  # [...]
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


def quick_gelu(x):  # [...] -> [...]
    """x sigmoid(1.702 x) (transformers' "quick_gelu")."""
    return x * sigmoid(QUICK_GELU_SCALE * x)


def quick_gelu_backward(dy, x):  # [...], [...] -> [...]
    """d/dx x s(a x) = s(a x) + a x s(a x) (1 - s(a x)), a = 1.702."""
    s = sigmoid(QUICK_GELU_SCALE * x)  # [...]
    return dy * (s + QUICK_GELU_SCALE * x * s * (1.0 - s))


def relu(x):  # [...] -> [...]
    """max(x, 0)."""
    return np.maximum(x, x.dtype.type(0))


def relu_backward(dy, x):  # [...], [...] -> [...]
    """1 where x > 0, else 0 (0 at x = 0, as PyTorch)."""
    return np.where(x > 0, dy, dy.dtype.type(0))


def silu(x):  # [...] -> [...]
    """x sigmoid(x), also called swish."""
    return x * sigmoid(x)


def silu_backward(dy, x):  # [...], [...] -> [...]
    """d/dx x s(x) = s(x) (1 + x (1 - s(x)))."""
    s = sigmoid(x)  # [...]
    return dy * (s * (1.0 + x * (1.0 - s)))


swish = silu  # transformers' "swish" is nn.SiLU
swish_backward = silu_backward


def tanh(x):  # [...] -> [...]
    """tanh(x): the pooler's activation (``nn.Tanh``), and hidden_act="tanh"."""
    return np.tanh(x)


def tanh_backward(dy, x):  # [...], [...] -> [...]
    """d/dx tanh x = 1 - tanh^2 x."""
    t = np.tanh(x)  # [...]
    return dy * (1.0 - t * t)


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
