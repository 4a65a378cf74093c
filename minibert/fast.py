"""The fast forward pass: ``BertModel.forward``'s computation with its steps fused.

``model.py`` computes BERT as a flat sequence of named steps, each passed through ``tap``: the
readable reference, and the path every trace, hook and intervention uses. When nothing is
traced (``tap`` is ``no_tap``), attention probabilities are not asked for and the backend is
"numba", ``BertModel.forward`` calls ``forward`` below instead. It computes the same thing in
fewer, larger steps:

- **One pass for the embeddings** (``embeddings``: three row lookups, the sums and the
  LayerNorm in one loop).
- **Bias where the product is read.** A matrix product never adds its bias itself; the kernel
  that reads the product adds it on the way (``bias_activation``: GELU(h + b) in place;
  ``bias_add_layer_norm``: LayerNorm(h + b + residual); the attention kernel adds the query,
  key and value biases). One pass over each [N, out] product instead of two or three.
- **Few rows, large matrices, no BLAS** (N = B*T <= ``SMALL_ROWS``, e.g. one sentence of 8
  tokens, and N * H * H >= ``PARALLEL_MIN_MACS``): the whole layer is one Numba function,
  ``layer_small``, whose products read each weight row once and dot it with every input row
  (``linear_rows``), the weight's rows split over Numba's threads. At 8 rows a product is bound by reading
  the weights, and BLAS first copies (packs) every transposed weight matrix on every call;
  these loops read the matrices where they are, in their [out, in] layout. Attention is one
  fused kernel per head (``attention_small``: scores, mask, softmax and context without the
  [B, A, T, T] arrays).
- **Otherwise**: the products are BLAS calls (``product``: one BLAS thread below
  ``PRODUCT_PARALLEL_MIN_MACS`` multiply-adds, all of them above) and the rest the fused
  kernels above; attention is the step path's (one BLAS product per head, the softmax kernel),
  with a large batch's sequences split over Python threads (``attention_in_threads``).

The weights are read from ``model.weights`` on every call, under their Hugging Face names:
there is no second copy, so a weight changed in place (``model.weights[name][...] = 0``) is
seen by both paths at once.

What "the same thing" means: ``layer_small``'s products sum in another order than BLAS does
(and BLAS's own order depends on the shape and thread count), so the two paths agree to
rounding, not bit for bit (the BLAS path gives the step path's bits on the machine where this
was written, which is not asserted). ``tests/test_fast.py`` holds them together on every
preset, both dtypes, padded batches and fully masked rows: relative to the tensor's scale,
at most ``FLOAT32_BOUND`` in float32 and ``FLOAT64_BOUND`` in float64. The PyTorch parity
tests run through this path (``model(...)``).

Axis legend as in ``ops``: B batch, T sequence, H hidden, A heads, D head size, I intermediate,
N = B*T rows.
"""

import os
import threading

import numpy as np
from numba import njit, prange

from . import kernels, ops
from .kernels import NJIT, _activation_one, _gelu_one, _layer_norm_row, _masked_softmax_row

__all__ = [
    "forward", "supports", "embeddings", "layer_small", "layer_large", "linear_rows", "product", "bias_activation",
    "bias_add_layer_norm", "attention_small", "attention_in_threads", "SMALL_ROWS", "PARALLEL_MIN_MACS",
    "PRODUCT_PARALLEL_MIN_MACS", "ATTENTION_THREADS_MIN_MACS", "FLOAT32_BOUND", "FLOAT64_BOUND",
]

SMALL_ROWS = 8  # at most this many rows (B*T), and PARALLEL_MIN_MACS per H x H product: layer_small
# The product size (rows x weight elements) from which linear_rows splits the output features
# over the threads, and from which layer_small is used at all: below it (bert-tiny at 8 rows,
# [8, 128] @ [128, 128], ~4 us of work) a thread launch costs more than it saves, and BLAS on
# one thread is faster than these loops (docs/performance.md, "The fast path").
PARALLEL_MIN_MACS = 1 << 18
# BLAS products (``product``) of at least this many multiply-adds run on all BLAS threads,
# smaller ones on one. Measured on OpenBLAS's SkylakeX kernel (docs/performance.md).
PRODUCT_PARALLEL_MIN_MACS = 1 << 18
# From this many multiply-adds in one of attention's two products (all heads), a batch of at
# least as many sequences as BLAS has threads runs in that many Python threads
# (attention_in_threads); below, handing over to a thread costs more than it saves.
ATTENTION_THREADS_MIN_MACS = 1 << 22

# layer_small's products start Numba's thread pool; one caller at a time. Numba's "workqueue"
# threading layer (where neither TBB nor OpenMP is installed) is not safe for launches from
# several Python threads at once, and under OpenMP each caller would start its own team,
# more threads than cores. Each launch computes the same bits whatever its team (each output
# feature is one thread's dot product), so the lock only orders the calls.
NUMBA_THREADS_LOCK = threading.Lock()

FLOAT32_BOUND = 1e-5  # max |fast - step| / max(1, max |step|), float32 (tests/test_fast.py)
FLOAT64_BOUND = 1e-12  # the same, float64

# config.hidden_act -> (kind, parameter) of the activation the fused kernels apply
GELU, TANH_GELU, X_SIGMOID, RELU = 0, 1, 2, 3
ACTIVATIONS = {
    "gelu": (GELU, 0.0),
    "gelu_new": (TANH_GELU, ops.GELU_TANH_SCALE),
    "gelu_pytorch_tanh": (TANH_GELU, ops.GELU_TANH_SCALE),
    "gelu_fast": (TANH_GELU, ops.GELU_FAST_SCALE),
    "quick_gelu": (X_SIGMOID, ops.QUICK_GELU_SCALE),
    "silu": (X_SIGMOID, 1.0),
    "swish": (X_SIGMOID, 1.0),
    "relu": (RELU, 0.0),
}
# Not "tanh": Numba's tanh and NumPy's differ in the last bit, and a tanh model (rare) keeps
# the step path's numbers exactly.


def supports(config):
    """True when ``forward`` computes this config's model (its activation has a fused kernel)."""
    return config.hidden_act in ACTIVATIONS


# ---------------------------------------------------------------------------------------
# Products of few rows: each weight row read once, dotted with every input row
# ---------------------------------------------------------------------------------------


@njit(fastmath={"reassoc"}, **NJIT)
def _dot_rows(x, weight, n, out):  # out[:, n] = x @ weight[n]: one weight row, every input row
    w = weight[n]  # [in]
    for m in range(x.shape[0]):
        xm = x[m]
        total = out[m, n]  # 0: out starts as zeros
        for k in range(w.shape[0]):
            total += xm[k] * w[k]  # "reassoc": summed in vector lanes
        out[m, n] = total


@njit(fastmath={"reassoc"}, **NJIT)
def _dot_4_rows(x, weight, n, out):  # out[:, n:n+4] = x @ weight[n:n+4].T: each x[m] loaded once for 4 dots
    w0, w1, w2, w3 = weight[n], weight[n + 1], weight[n + 2], weight[n + 3]  # [in] each
    for m in range(x.shape[0]):
        xm = x[m]
        s0 = s1 = s2 = s3 = out[m, n]  # 0: out starts as zeros
        for k in range(xm.shape[0]):
            s0 += xm[k] * w0[k]
            s1 += xm[k] * w1[k]
            s2 += xm[k] * w2[k]
            s3 += xm[k] * w3[k]
        out[m, n], out[m, n + 1], out[m, n + 2], out[m, n + 3] = s0, s1, s2, s3


@njit(parallel=True, **NJIT)
def _linear_rows_parallel(x, weight, out):  # [N, in], [out, in] -> [N, out]; blocks of 4 features over the threads
    for block in prange(weight.shape[0] // 4):
        _dot_4_rows(x, weight, 4 * block, out)
    for n in range(weight.shape[0] // 4 * 4, weight.shape[0]):  # the last out % 4 features
        _dot_rows(x, weight, n, out)


@njit(**NJIT)
def _linear_rows_serial(x, weight, out):  # the same on one thread
    for block in range(weight.shape[0] // 4):
        _dot_4_rows(x, weight, 4 * block, out)
    for n in range(weight.shape[0] // 4 * 4, weight.shape[0]):
        _dot_rows(x, weight, n, out)


@njit(**NJIT)
def linear_rows(x, weight):  # [N, in], [out, in] -> [N, out]
    """``x @ weight.T`` for few rows, without bias: equals ``ops.linear(x, weight, 0)``.

    Reads ``weight`` once, in its stored [out, in] layout, four rows at a time, each dotted
    with every input row (summed in vector lanes, so in another order than BLAS); the blocks
    of four are split over the threads from ``PARALLEL_MIN_MACS`` multiply-adds.
    """
    out = np.zeros((x.shape[0], weight.shape[0]), x.dtype)  # [N, out]
    if x.shape[0] * weight.size >= PARALLEL_MIN_MACS:
        _linear_rows_parallel(x, weight, out)
    else:
        _linear_rows_serial(x, weight, out)
    return out


# ---------------------------------------------------------------------------------------
# Bias fused into the kernel that reads the product
# ---------------------------------------------------------------------------------------


@njit(**NJIT)
def bias_activation(h, bias, kind, p):  # [N, I], [I] -> [N, I], in place
    """``activation(h + bias)`` in place: equals ``ops.gelu(h + bias)`` (or the config's activation).

    The sum is rounded to the dtype first, as the step path's ``linear`` rounds its output. One
    loop per kind of activation, so that each loop is branch-free and vectorises.
    """
    for i in range(h.shape[0]):
        row = h[i]
        if kind == GELU:  # kernels.gelu's formula (float32: the vectorisable erf)
            for j in range(row.shape[0]):
                row[j] = _gelu_one(row[j] + bias[j])
        elif kind == RELU:
            for j in range(row.shape[0]):
                row[j] = max(row[j] + bias[j], row[j] * 0)
        else:  # the tanh GELUs and x sigmoid(p x): kernels' _activation_one (kinds 0 and 1 there)
            for j in range(row.shape[0]):
                row[j] = _activation_one(row[j] + bias[j], kind - TANH_GELU, p)
    return h


@njit(**NJIT)
def bias_add_layer_norm(h, bias, residual, weight, ln_bias, eps):  # [N, H], [H], [N, H] -> [N, H]
    """``LayerNorm(h + bias + residual)``: equals ``ops.add_layer_norm(h + bias, residual, ...)``.

    Rounds as the step path: ``h + bias`` to the dtype (``linear``'s output), then the sum with
    the residual, then ``kernels``' LayerNorm row (float64 mean and variance).
    """
    out = np.empty_like(h)  # [N, H]
    for i in range(h.shape[0]):
        s = out[i]
        for j in range(h.shape[1]):
            s[j] = (h[i, j] + bias[j]) + residual[i, j]
        _layer_norm_row(s, weight, ln_bias, eps, s)
    return out


# ---------------------------------------------------------------------------------------
# Embeddings in one pass
# ---------------------------------------------------------------------------------------


@njit(**NJIT)
def embeddings(input_ids, token_type_ids, words, positions, types, weight, bias, eps):  # [B, T] -> [B, T, H]
    """``BertModel.embeddings`` in one pass: LayerNorm(word + token type + position rows).

    Sums in transformers' order, ``(words + types) + positions``, rounded to the dtype as the
    step path's NumPy sums, then ``kernels``' LayerNorm row: the same bits as the step path.
    """
    B, T = input_ids.shape
    out = np.empty((B, T, words.shape[1]), words.dtype)  # [B, T, H]
    for b in range(B):
        for t in range(T):
            row, w, y, p = out[b, t], words[input_ids[b, t]], types[token_type_ids[b, t]], positions[t]
            for j in range(row.shape[0]):
                row[j] = (w[j] + y[j]) + p[j]
            _layer_norm_row(row, weight, bias, eps, row)
    return out


# ---------------------------------------------------------------------------------------
# Attention of few rows: one fused kernel per head
# ---------------------------------------------------------------------------------------


@njit(fastmath={"reassoc", "contract"}, **NJIT)
def _dot(a, b):  # [D], [D] -> scalar, summed in vector lanes
    total = a[0] * 0
    for d in range(a.shape[0]):
        total += a[d] * b[d]
    return total


@njit(**NJIT)
def _attention_head(query, key, value, mask_bias, bq, bk, bv, b, a, head_size, scale, out):
    """Head ``a`` of sequence ``b``: softmax(Q K^T / sqrt(D) + mask) V into out[b, :, aD:(a+1)D]."""
    T, D, lo = query.shape[1], head_size, a * head_size  # this head's columns: lo, ..., lo + D - 1
    q, k, v = np.empty((T, D), query.dtype), np.empty((T, D), query.dtype), np.empty((T, D), query.dtype)
    for t in range(T):  # this head's slice of each token, plus the bias: [T, D] each
        for d in range(D):
            q[t, d] = query[b, t, lo + d] + bq[lo + d]
            k[t, d] = key[b, t, lo + d] + bk[lo + d]
            v[t, d] = value[b, t, lo + d] + bv[lo + d]
    scores, probs, bits = np.empty(T, query.dtype), np.empty(T, query.dtype), np.empty(T, np.int32)
    for t in range(T):  # one query row at a time
        for j in range(T):
            scores[j] = _dot(q[t], k[j]) * scale  # [T]: Q K^T, then scaled, as kernels.attention_scores
        _masked_softmax_row(scores, mask_bias[b], probs, bits)  # kernels.masked_softmax's row
        for d in range(D):
            out[b, t, lo + d] = 0
        for j in range(T):  # P V, one key at a time
            for d in range(D):
                out[b, t, lo + d] += probs[j] * v[j, d]


@njit(**NJIT)
def attention_small(query, key, value, mask_bias, bq, bk, bv, num_heads, scale):
    """Self-attention of few rows from the raw Q, K, V products, without bias: [B, T, H] each.

    Equals the step path's ``split_heads(q + bq)`` ... ``attention_scores``, ``masked_softmax``
    (``mask_bias``: [B, T]), ``attention_context``, ``merge_heads``: the context [B, T, H].
    Per head it holds only [T, D] and [T] arrays; the [B, A, T, T] scores and probabilities
    are never built.
    """
    out = np.empty_like(query)  # [B, T, H]
    D = query.shape[2] // num_heads
    for b in range(query.shape[0]):
        for a in range(num_heads):
            _attention_head(query, key, value, mask_bias, bq, bk, bv, b, a, D, scale, out)
    return out


# ---------------------------------------------------------------------------------------
# One layer, few rows: everything in one Numba function
# ---------------------------------------------------------------------------------------


@njit(**NJIT)
def layer_small(x, mask_bias, w, num_heads, scale, eps, kind, p):  # [B, T, H] -> [B, T, H]
    """One transformer layer (``BertModel.layer``) for few rows, all in Numba.

    ``w``: the layer's 16 tensors in ``layer_weights`` order. ``mask_bias``: [B, T].
    """
    (wq, bq, wk, bk, wv, bv, wo, bo, ln1_w, ln1_b, wi, bi, wo2, bo2, ln2_w, ln2_b) = w
    B, T, H = x.shape
    rows = x.reshape(B * T, H)  # [N, H]
    q = linear_rows(rows, wq).reshape(B, T, H)  # [B, T, H], bias added in the attention kernel
    k = linear_rows(rows, wk).reshape(B, T, H)
    v = linear_rows(rows, wv).reshape(B, T, H)
    context = attention_small(q, k, v, mask_bias, bq, bk, bv, num_heads, scale)  # [B, T, H]
    h = linear_rows(context.reshape(B * T, H), wo)  # [N, H]
    attended = bias_add_layer_norm(h, bo, rows, ln1_w, ln1_b, eps)  # [N, H]
    h = bias_activation(linear_rows(attended, wi), bi, kind, p)  # [N, I]
    h = linear_rows(h, wo2)  # [N, H]
    return bias_add_layer_norm(h, bo2, attended, ln2_w, ln2_b, eps).reshape(B, T, H)


# ---------------------------------------------------------------------------------------
# One layer, many rows: BLAS products, fused kernels between them
# ---------------------------------------------------------------------------------------


def layer_large(x, mask_bias, w, num_heads, scale, eps, kind, p):  # [B, T, H] -> [B, T, H]
    """One transformer layer (``BertModel.layer``) for many rows: BLAS products, fused kernels.

    The same arguments as ``layer_small``; ``mask_bias``: [B, T].
    """
    (wq, bq, wk, bk, wv, bv, wo, bo, ln1_w, ln1_b, wi, bi, wo2, bo2, ln2_w, ln2_b) = w
    B, T, H = x.shape
    rows = x.reshape(B * T, H)  # [N, H]
    q, k, v = (product(rows, wq), product(rows, wk), product(rows, wv))  # [N, H] each, no bias
    # Attention as in the step path: one BLAS product per head, the softmax kernel; a large
    # batch's sequences split over Python threads, one per BLAS thread (attention_in_threads).
    for m, bias in ((q, bq), (k, bk), (v, bv)):
        m += bias  # [N, H] + [H], in place: the products are this function's own arrays
    q, k, v = (ops.split_heads(m.reshape(B, T, H), num_heads) for m in (q, k, v))  # [B, A, T, D] views
    threads = kernels._BLAS_THREADS or 1  # OpenBLAS's default count (1 without OpenBLAS)
    if threads > 1 and B >= threads and q.size * T >= ATTENTION_THREADS_MIN_MACS:
        context = attention_in_threads(q, k, v, mask_bias, scale)  # [B, T, H]
    else:  # the step path's kernels, as they are
        scores = kernels.attention_scores(q, k, scale)  # [B, A, T, T]
        probs = kernels.masked_softmax(scores, mask_bias[:, None, None, :])  # [B, A, T, T]
        context = ops.merge_heads(kernels.attention_context(probs, v))  # [B, T, H]
    attended = bias_add_layer_norm(product(context.reshape(B * T, H), wo), bo, rows, ln1_w, ln1_b, eps)  # [N, H]
    h = bias_activation(product(attended, wi), bi, kind, p)  # [N, I]
    return bias_add_layer_norm(product(h, wo2), bo2, attended, ln2_w, ln2_b, eps).reshape(B, T, H)


def product(rows, weight):  # [N, in], [out, in] -> [N, out]
    """``rows @ weight.T`` on BLAS, without bias; on one BLAS thread below ``PRODUCT_PARALLEL_MIN_MACS``."""
    return kernels._matmul(rows, weight.T, rows.shape[0] * weight.size, PRODUCT_PARALLEL_MIN_MACS)


def _attention_sequences(query, key, value, mask_bias, scale, context):
    """softmax(Q K^T scale + mask) V of some sequences, one at a time, into ``context`` (a view):
    [b, A, T, D] each, mask_bias [b, T]. Plain NumPy products: the caller holds BLAS_LOCK with
    BLAS on one thread. One sequence's scores and probabilities (MiniLM at T = 128: 12 heads x
    [128, 128], 768 KB) stay in the core's cache between the three steps."""
    for i in range(query.shape[0]):
        one = slice(i, i + 1)  # sequence i: [1, ...]
        scores = query[one] @ key[one].transpose(0, 1, 3, 2)  # [1, A, T, T]
        scores *= scale
        _, A, T, _ = scores.shape
        probs = np.empty_like(scores)  # kernels.masked_softmax's serial core, on rows [1, A * T, T]
        kernels._masked_softmax_serial(scores.reshape(1, A * T, T), mask_bias[one], probs.reshape(1, A * T, T))
        np.matmul(probs, value[one], out=context[one])  # [1, A, T, D]


_POOL = {}  # process id -> the worker threads of attention_in_threads (a forked child makes its own)


def attention_in_threads(query, key, value, mask_bias, scale):  # [B, A, T, D] x3, [B, T] -> [B, T, H]
    """Attention with the sequences split over as many Python threads as BLAS has threads.

    NumPy calls BLAS once per head; each head's products are too small to gain from BLAS's
    own threads (waking them for a [128, 32] @ [32, 128] costs more than it saves), so the
    step path runs all heads on one core. Here the B sequences are split into as many parts
    as BLAS has threads, and each part (its products and its softmax, which release the GIL)
    runs in its own Python thread on one BLAS thread. BLAS_LOCK is held throughout with BLAS
    on one thread, so no other product of the kernels runs meanwhile and each head is computed
    as on one thread, whatever the other threads do. (Splitting one sequence's heads instead
    measured slower in the whole pass: docs/performance.md.)
    """
    from concurrent.futures import ThreadPoolExecutor

    B, A, T, D = query.shape
    context = np.empty((B, T, A, D), query.dtype)  # the heads merged: [B, T, H] once reshaped
    heads_out = context.transpose(0, 2, 1, 3)  # [B, A, T, D], a view
    edges = np.linspace(0, B, kernels._BLAS_THREADS + 1).astype(int)  # sequences lo..hi-1 per part
    parts = [(query[lo:hi], key[lo:hi], value[lo:hi], mask_bias[lo:hi], scale, heads_out[lo:hi])
             for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    pid = os.getpid()
    if pid not in _POOL:
        _POOL[pid] = ThreadPoolExecutor(max_workers=len(parts) - 1, thread_name_prefix="minibert-attention")
    with kernels.BLAS_LOCK:
        kernels._OPENBLAS[1](1)  # one BLAS thread for every part
        try:
            futures = [_POOL[pid].submit(_attention_sequences, *part) for part in parts[1:]]
            _attention_sequences(*parts[0])  # the first part in this thread
            for future in futures:
                future.result()
        finally:
            kernels._OPENBLAS[1](kernels._BLAS_THREADS)
    return context.reshape(B, T, A * D)


# ---------------------------------------------------------------------------------------
# The whole pass
# ---------------------------------------------------------------------------------------

LAYER_TENSORS = (  # a layer's tensors, in the order layer_small and layer_large unpack them
    "attention.self.query.weight", "attention.self.query.bias",
    "attention.self.key.weight", "attention.self.key.bias",
    "attention.self.value.weight", "attention.self.value.bias",
    "attention.output.dense.weight", "attention.output.dense.bias",
    "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias",
    "intermediate.dense.weight", "intermediate.dense.bias",
    "output.dense.weight", "output.dense.bias",
    "output.LayerNorm.weight", "output.LayerNorm.bias",
)


def layer_weights(weights, i):
    """Layer ``i``'s 16 tensors from the model's weights (no copy), in ``LAYER_TENSORS`` order."""
    return tuple(weights[f"encoder.layer.{i}.{name}"] for name in LAYER_TENSORS)


def forward(model, input_ids, attention_mask, token_type_ids, output_hidden_states=False):
    """``model.forward``'s outputs, fused: (last hidden state [B, T, H], pooler output [B, H] or
    None, hidden states (L + 1 arrays) or None). Inputs checked, as for ``model.forward``."""
    config, dtype = model.config, model.dtype
    B, T = input_ids.shape
    w = model.weights
    x = embeddings(input_ids, token_type_ids, w["embeddings.word_embeddings.weight"],
                   w["embeddings.position_embeddings.weight"], w["embeddings.token_type_embeddings.weight"],
                   w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], config.layer_norm_eps)  # [B, T, H]
    mask_bias = ops.attention_mask_bias(attention_mask, dtype).reshape(B, T)  # [B, T]
    kind, p = ACTIVATIONS[config.hidden_act]
    scale = dtype.type(config.head_size ** -0.5)  # 1 / sqrt(D)
    H = config.hidden_size
    few_rows = B * T <= SMALL_ROWS and B * T * H * H >= PARALLEL_MIN_MACS
    hidden_states = [x]
    for i in range(config.num_hidden_layers):
        w = layer_weights(model.weights, i)  # layer i's 16 tensors
        if few_rows:
            with NUMBA_THREADS_LOCK:
                x = layer_small(x, mask_bias, w, config.num_attention_heads, scale, config.layer_norm_eps, kind, p)
        else:
            x = layer_large(x, mask_bias, w, config.num_attention_heads, scale, config.layer_norm_eps, kind, p)
        if output_hidden_states:
            hidden_states.append(x)
    pooled = model.pooler(x) if model.has_pooler else None  # [B, H]: one small product, tanh
    return x, pooled, tuple(hidden_states) if output_hidden_states else None
