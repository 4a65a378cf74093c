"""The math of BERT in plain NumPy: small pure functions, the readable reference.

Every function takes and returns NumPy arrays and says its shapes. ``kernels.py`` holds
Numba twins of some of these functions with the same signatures; tests hold the two equal.

Beside each forward function sits its backward, ``<op>_backward(grad_output, <what it needs>)``,
returning the gradient of the loss with respect to each input (a tuple when there are several).
For an activation ``act`` it is ``act_backward(dy, x) -> dx``, with x the activation's input.
``d<name>`` is d loss / d <name>, of the same shape as <name>. ``minibert.train`` chains them.

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
    # the backward pass (minibert.train), each beside its forward
    "linear_backward", "layer_norm_backward", "add_layer_norm_backward", "gelu_backward",
    "tanh_backward",
    "softmax_backward", "embedding_backward", "split_heads_backward", "merge_heads_backward",
    "attention_scores_backward", "masked_softmax_backward", "attention_context_backward",
    "dropout_mask", "dropout", "dropout_backward",
    # the other hidden_act values (config.SUPPORTED_ACTIVATIONS), each with its backward
    "sigmoid", "gelu_new", "gelu_new_backward", "gelu_pytorch_tanh", "gelu_pytorch_tanh_backward",
    "gelu_fast", "gelu_fast_backward", "quick_gelu", "quick_gelu_backward", "relu", "relu_backward",
    "silu", "silu_backward", "swish", "swish_backward",
]

# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def linear(x, weight, bias):  # [..., in] -> [..., out]
    """A PyTorch ``nn.Linear``: the weight is stored [out, in], so we multiply by its transpose."""
    return x @ weight.T + bias  # [..., in] @ [in, out] + [out] -> [..., out]


def linear_backward(dy, x, weight):  # [..., out], [..., in], [out, in] -> dx, dweight, dbias
    """y = x W^T + b, so dx = dy W, dW = dy^T x (summed over every leading axis), db = sum dy."""
    dx = dy @ weight  # [..., out] @ [out, in] -> [..., in]
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])  # [N, out], [N, in]
    dweight = dy2.T @ x2  # [out, N] @ [N, in] -> [out, in]
    dbias = dy2.sum(0)  # [out]
    return dx, dweight, dbias


def layer_norm(x, weight, bias, eps):  # [..., H] -> [..., H]
    """LayerNorm over the last axis with the biased variance, as ``torch.nn.LayerNorm``."""
    mean = x.mean(-1, keepdims=True)  # [..., 1]
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # [..., 1], biased (divide by H)
    return (x - mean) / np.sqrt(var + eps) * weight + bias  # [..., H]


def layer_norm_backward(dy, x, weight, eps):  # [..., H], [..., H], [H] -> [..., H], [H], [H]
    """y = xhat w + b with xhat = (x - mean) r, r = 1 / sqrt(var + eps), over the last axis.

    dw = sum dy xhat and db = sum dy over the leading axes. With g = dy w, the chain rule through
    mean and var (each a function of every x of the row) gives
        dx = r (g - mean(g) - xhat mean(g xhat)),
    the two means being what the row's shared mean and variance contribute.
    """
    mean = x.mean(-1, keepdims=True)  # [..., 1]
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)  # [..., 1]
    xhat = (x - mean) * rstd  # [..., H]
    g = dy * weight  # [..., H], d loss / d xhat
    g_mean = g.mean(-1, keepdims=True)  # [..., 1]
    gx_mean = (g * xhat).mean(-1, keepdims=True)  # [..., 1]
    dx = rstd * (g - g_mean - xhat * gx_mean)  # [..., H]
    H = x.shape[-1]
    dweight = (dy * xhat).reshape(-1, H).sum(0)  # [H]
    dbias = dy.reshape(-1, H).sum(0)  # [H]
    return dx, dweight, dbias


def add_layer_norm(x, residual, weight, bias, eps):  # [..., H], [..., H] -> [..., H]
    """The residual connection followed by LayerNorm: ``LayerNorm(x + residual)``."""
    return layer_norm(x + residual, weight, bias, eps)


def add_layer_norm_backward(dy, x, residual, weight, eps):  # -> dx, dresidual, dweight, dbias
    """y = LayerNorm(x + residual): both addends receive the gradient of the sum."""
    dsum, dweight, dbias = layer_norm_backward(dy, x + residual, weight, eps)  # [..., H], [H], [H]
    return dsum, dsum, dweight, dbias  # dx, dresidual (the same array), dweight, dbias


# NumPy has no erf. math.erf is the C library's erf, applied here element by element: slow,
# but exactly the function transformers' exact GELU uses. kernels.gelu is the fast twin.
_erf_elementwise = np.frompyfunc(math.erf, 1, 1)


def erf(x):  # [...] -> [...]
    return _erf_elementwise(x).astype(x.dtype)


def gelu(x):  # [...] -> [...]
    """Exact GELU (not the tanh approximation): x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_backward(dy, x):  # [...], [...] -> [...]
    """gelu(x) = x Phi(x), so gelu'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))  # [...], Phi(x)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # [...], phi(x)
    return dy * (cdf + x * pdf)


# ---------------------------------------------------------------------------------------
# The other activations a BERT config may name (hidden_act; the list is
# config.SUPPORTED_ACTIVATIONS). Each function has the name of its hidden_act, and its
# backward sits beside it: ``<name>_backward(dy, x) -> dx``, dy and dx of x's shape, the
# derivative in the docstring (gelu and gelu_backward are just above).
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
    """The pooler's activation: tanh'(x) = 1 - tanh(x)^2."""
    y = tanh(x)  # [...]
    return dy * (1.0 - y * y)


def softmax(x):  # [..., N] -> [..., N]
    """Softmax over the last axis; subtracting the row max keeps exp() from overflowing."""
    e = np.exp(x - x.max(-1, keepdims=True))  # [..., N]
    return e / e.sum(-1, keepdims=True)


def softmax_backward(dy, y):  # [..., N], [..., N] -> [..., N]
    """y = softmax(x): dy_i/dx_j = y_i (delta_ij - y_j), so dx = y (dy - sum_j dy_j y_j) per row."""
    return y * (dy - (dy * y).sum(-1, keepdims=True))  # [..., N]


# ---------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------


def embedding(ids, table):  # [B, T] int, [N, H] -> [B, T, H]
    """Look up one row of the table per id (a PyTorch ``nn.Embedding``)."""
    return table[ids]


def embedding_backward(dy, ids, num_embeddings, padding_idx=None):  # [B, T, H], [B, T] -> [N, H]
    """A lookup copies row ids[b, t] to position (b, t), so each row's gradient is the sum of
    dy over every position that read it: a scatter-add (``np.add.at`` adds repeated ids,
    ``dtable[ids] += dy`` would keep only one). The ``padding_idx`` row gets no gradient, as
    in ``torch.nn.Embedding(padding_idx=...)``."""
    H = dy.shape[-1]
    dtable = np.zeros((num_embeddings, H), dtype=dy.dtype)  # [N, H]
    np.add.at(dtable, ids.reshape(-1), dy.reshape(-1, H))  # [B*T] rows of [B*T, H] added in
    if padding_idx is not None:
        dtable[padding_idx] = 0
    return dtable


def position_ids(seq_length):  # -> [1, T]
    """BERT's absolute positions 0, 1, ..., T-1, shared by every row of the batch."""
    return np.arange(seq_length)[None, :]


# ---------------------------------------------------------------------------------------
# Self-attention
# ---------------------------------------------------------------------------------------


def split_heads(x, num_heads):  # [B, T, H] -> [B, A, T, D]
    B, T, H = x.shape
    return x.reshape(B, T, num_heads, H // num_heads).transpose(0, 2, 1, 3)


def split_heads_backward(dy):  # [B, A, T, D] -> [B, T, H]
    """A reshape and a transpose: the gradient is the inverse reshuffle, ``merge_heads``."""
    return merge_heads(dy)


def merge_heads(x):  # [B, A, T, D] -> [B, T, H]
    B, A, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, A * D)


def merge_heads_backward(dy, num_heads):  # [B, T, H] -> [B, A, T, D]
    """The inverse reshuffle of ``merge_heads``: ``split_heads``."""
    return split_heads(dy, num_heads)


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


def attention_scores_backward(dscores, query, key, scale):  # [B, A, T, T] -> dquery, dkey
    """S = s Q K^T, so dQ = s dS K and dK = s dS^T Q."""
    dquery = (dscores @ key) * scale  # [B, A, T, T] @ [B, A, T, D] -> [B, A, T, D]
    dkey = (dscores.transpose(0, 1, 3, 2) @ query) * scale  # [B, A, T, T] @ [B, A, T, D]
    return dquery, dkey


def masked_softmax(scores, mask_bias):  # [B, A, T, T], [B, 1, 1, T] -> [B, A, T, T]
    """Add the padding mask to the scaled scores, then softmax over the keys."""
    return softmax(scores + mask_bias)


def masked_softmax_backward(dprobs, probs):  # [B, A, T, T], [B, A, T, T] -> [B, A, T, T]
    """The mask is a constant added to the scores, so d scores = d (scores + mask): softmax's
    backward. A masked key has probability 0, so it gets no gradient."""
    return softmax_backward(dprobs, probs)


def attention_context(probs, value):  # [B, A, T, T], [B, A, T, D] -> [B, A, T, D]
    """Each query's output: the probability-weighted sum of the values."""
    return probs @ value


def attention_context_backward(dcontext, probs, value):  # [B, A, T, D] -> dprobs, dvalue
    """C = P V, so dP = dC V^T and dV = P^T dC."""
    dprobs = dcontext @ value.transpose(0, 1, 3, 2)  # [B, A, T, D] @ [B, A, D, T] -> [B, A, T, T]
    dvalue = probs.transpose(0, 1, 3, 2) @ dcontext  # [B, A, T, T] @ [B, A, T, D] -> [B, A, T, D]
    return dprobs, dvalue


# ---------------------------------------------------------------------------------------
# Dropout (training only; the identity at inference)
# ---------------------------------------------------------------------------------------


def dropout_mask(rng, shape, p, dtype):  # -> [*shape] of 0 or 1 / (1 - p)
    """The multiplier of inverted dropout, as ``torch.nn.functional.dropout``: each element is
    kept with probability 1 - p and then scaled by 1 / (1 - p), so the expectation is unchanged."""
    if p >= 1.0:
        return np.zeros(shape, dtype)
    keep = rng.random(shape) >= p  # [*shape] bool
    return keep.astype(dtype) * np.dtype(dtype).type(1.0 / (1.0 - p))


def dropout(x, mask):  # [...], [...] -> [...]
    return x * mask


def dropout_backward(dy, mask):  # [...], [...] -> [...]
    """y = x m with a fixed m: dx = dy m."""
    return dy * mask
