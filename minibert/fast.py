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
- **Few rows or one sequence, no BLAS** (N = B*T <= ``SMALL_ROWS``, e.g. one sentence of up
  to 64 tokens, or B = 1 at any length from H = 256: ``takes_layer_small``): the whole layer
  is one Numba function, ``layer_small``. Its products read each weight row
  once, in the stored [out, in] layout, and dot blocks of 4 weight rows with blocks of 4 input
  rows (``linear_rows``; the query, key and value products in one loop), split over Numba's
  threads from ``PARALLEL_MIN_MACS`` multiply-adds. At few rows a product is bound by reading
  the weights, and BLAS first copies (packs) every transposed weight matrix on every call.
  Attention is one fused kernel per head (``attention``: scores, mask, softmax and context, a
  block of queries at a time, without the [B, A, T, T] arrays), the B * A heads split over
  Numba's threads. One call per layer instead of ~20 also removes most of the Python overhead
  that dominates a pass of bert-tiny. A single long sequence takes it too: there the fused
  attention saves more than the Numba products lose to BLAS (and no BLAS call leaves
  OpenBLAS's worker spinning on the core Numba's threads need).
- **Otherwise** (a batch of more than ``SMALL_ROWS`` rows, or a long sequence of bert-tiny's
  size): the products are BLAS calls
  (``product``: one BLAS thread below ``PRODUCT_PARALLEL_MIN_MACS`` multiply-adds, all of them
  above) and the rest the fused kernels above; attention is the step path's (one BLAS product
  per head, the softmax kernel), with a large batch's sequences split over Python threads
  (``attention_in_threads``). Numba's threads are not used there: right after a BLAS product
  OpenBLAS's idle worker still spins on the second core, and a Numba thread that needs that
  core stalls the whole parallel loop (``attention`` in layer_large measured 1.1-10x slower in
  the pass, docs/performance.md).

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

import functools
import os
import threading

import numpy as np
from numba import njit, prange

from . import kernels, ops
from .kernels import NJIT, _activation_one, _gelu_one, _layer_norm_row, _masked_softmax_row

__all__ = [
    "forward", "supports", "takes_layer_small", "embeddings", "layer_small", "layer_large", "linear_rows",
    "product", "bias_activation", "bias_add_layer_norm", "attention", "attention_in_threads", "SMALL_ROWS",
    "ONE_SEQUENCE_MIN_HIDDEN", "PARALLEL_MIN_MACS", "QUARTER_BLOCKS_MAX_ROWS", "PRODUCT_PARALLEL_MIN_MACS",
    "ATTENTION_THREADS_MIN_MACS",
    "QUERY_BLOCK", "FLOAT32_BOUND", "FLOAT64_BOUND",
]

# Inputs of at most this many rows (B*T) run through layer_small, and so does a single
# sequence (B = 1) of any length when the hidden size is at least ONE_SEQUENCE_MIN_HIDDEN;
# the rest through layer_large (takes_layer_small). Measured with benchmarks/tune_fast.py
# (part 2: whole passes, each side in its own processes), layer_small / layer_large: up to 64
# rows 0.37-0.98 on every preset and MiniLM-L6's shape (bert-tiny (1, 64): 1.30 in one run,
# 0.98 in a rerun); one sequence of 128 or 512 tokens
# 0.73-0.79 (bert-medium), 0.81-0.94 (MiniLM-L6), 0.88-1.00 (bert-small), 0.97-1.03
# (bert-mini), but 1.18-1.27 on bert-tiny (H = 128: dot products of 128 are too short to
# amortise their sums, and two heads keep only two threads busy); batches of 8 x 128 1.03-1.36.
SMALL_ROWS = 64
ONE_SEQUENCE_MIN_HIDDEN = 256
# The product size (rows x weight elements) from which linear_rows (and layer_small's products)
# split the output features over Numba's threads. benchmarks/tune_fast.py, 2 threads against
# one: 2^18 and more win in every run ([1, 512] @ [512, 512] 10.5 us against 19.3); at 2^17 and
# less the result changes from run to run with the time it takes to wake a thread
# ([8, 128] @ [128, 128]: 6.4 against 7.1 us in one run, 7.8 against 5.8 in another).
PARALLEL_MIN_MACS = 1 << 18
# Up to this many input rows, linear_rows' blocks of four weight rows take rows a quarter of
# the matrix apart (long runs of memory for the prefetcher); from here on, four neighbours.
QUARTER_BLOCKS_MAX_ROWS = 128
# BLAS products (``product``) of at least this many multiply-adds run on all BLAS threads,
# smaller ones on one. Measured on OpenBLAS's SkylakeX kernel (docs/performance.md).
PRODUCT_PARALLEL_MIN_MACS = 1 << 18
# From this many multiply-adds in one of attention's two products (all heads), a batch of at
# least as many sequences as BLAS has threads runs in that many Python threads
# (attention_in_threads); below, handing over to a thread costs more than it saves.
ATTENTION_THREADS_MIN_MACS = 1 << 22

# layer_small and attention start Numba's thread pool; one caller at a time. Numba's "workqueue"
# threading layer (where neither TBB nor OpenMP is installed) is not safe for launches from
# several Python threads at once, and under OpenMP each caller would start its own team,
# more threads than cores. Each launch computes the same bits whatever its team (each output
# feature, each head, is one thread's work), so the lock only orders the calls.
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


@njit(fastmath={"reassoc", "contract"}, **NJIT)
def _dot_rows(x, weight, n, out):  # out[:, n] = x @ weight[n]: one weight row, every input row
    w = weight[n]  # [in]
    for m in range(x.shape[0]):
        xm = x[m]
        total = out[m, n]  # 0: out starts as zeros
        for k in range(w.shape[0]):
            total += xm[k] * w[k]  # "reassoc": summed in vector lanes
        out[m, n] = total


@njit(fastmath={"reassoc", "contract"}, **NJIT)
def _dot_4x4(x, m, weight, n, s, out):  # out[m:m+4, (n, n+s, n+2s, n+3s)] = x[m:m+4] @ weight[(n, ...)].T
    """16 dot products from 8 rows: each element of x and weight loaded once for 4 multiply-adds.

    The four weight rows are ``s`` rows apart: rows n, n + s, n + 2s, n + 3s (see ``_linear_rows_blocks``).
    """
    x0, x1, x2, x3 = x[m], x[m + 1], x[m + 2], x[m + 3]  # [in] each
    w0, w1, w2, w3 = weight[n], weight[n + s], weight[n + 2 * s], weight[n + 3 * s]  # [in] each
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = out[m, n]  # 0: out starts as zeros
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = out[m, n]
    for k in range(x0.shape[0]):  # "reassoc": each sum in vector lanes
        a, b, c, d = w0[k], w1[k], w2[k], w3[k]
        s00 += x0[k] * a; s01 += x0[k] * b; s02 += x0[k] * c; s03 += x0[k] * d  # noqa: E702
        s10 += x1[k] * a; s11 += x1[k] * b; s12 += x1[k] * c; s13 += x1[k] * d  # noqa: E702
        s20 += x2[k] * a; s21 += x2[k] * b; s22 += x2[k] * c; s23 += x2[k] * d  # noqa: E702
        s30 += x3[k] * a; s31 += x3[k] * b; s32 += x3[k] * c; s33 += x3[k] * d  # noqa: E702
    n1, n2, n3 = n + s, n + 2 * s, n + 3 * s
    out[m, n], out[m, n1], out[m, n2], out[m, n3] = s00, s01, s02, s03
    out[m + 1, n], out[m + 1, n1], out[m + 1, n2], out[m + 1, n3] = s10, s11, s12, s13
    out[m + 2, n], out[m + 2, n1], out[m + 2, n2], out[m + 2, n3] = s20, s21, s22, s23
    out[m + 3, n], out[m + 3, n1], out[m + 3, n2], out[m + 3, n3] = s30, s31, s32, s33


@njit(fastmath={"reassoc", "contract"}, **NJIT)
def _dot_1x4(x, m, weight, n, s, out):  # out[m, (n, n+s, n+2s, n+3s)] = x[m] @ weight[(n, ...)].T
    xm = x[m]  # [in]
    w0, w1, w2, w3 = weight[n], weight[n + s], weight[n + 2 * s], weight[n + 3 * s]  # [in] each
    s0 = s1 = s2 = s3 = out[m, n]  # 0: out starts as zeros
    for k in range(xm.shape[0]):
        s0 += xm[k] * w0[k]
        s1 += xm[k] * w1[k]
        s2 += xm[k] * w2[k]
        s3 += xm[k] * w3[k]
    out[m, n], out[m, n + s], out[m, n + 2 * s], out[m, n + 3 * s] = s0, s1, s2, s3


@njit(**NJIT)
def _dot_4_rows(x, weight, n, s, out):  # out[:, (n, n+s, n+2s, n+3s)]: four weight rows, every input row
    for m in range(0, x.shape[0] - 3, 4):  # four input rows at a time
        _dot_4x4(x, m, weight, n, s, out)
    for m in range(x.shape[0] // 4 * 4, x.shape[0]):  # the last N % 4 input rows
        _dot_1x4(x, m, weight, n, s, out)


# Which functions use threads. Only ``prange`` loops run on Numba's threads (PRANGE_ONLY: no
# other array expression is turned into a parallel loop), and every function compiled with
# threads is called from Python only, never from another Numba function: Numba's cache can
# store a caller compiled against a cached parallel callee with mismatched symbol names, and
# the next process that loads that caller crashes (numba issue 8578; reproduced here, and
# tests/test_fast.py runs the sequence that triggered it). A function that needs threads
# inside (``layer_small``) gets them by inlining the loops (``_linear_rows_blocks``,
# ``_query_key_value_blocks``, ``_attention``: ``inline="always"`` puts their prange loops in
# the caller's own body); in a function compiled without threads the same loops run serially.
PRANGE_ONLY = dict(prange=True, comprehension=False, reduction=False, inplace_binop=False, setitem=False,
                   numpy=False, stencil=False, fusion=False)


@njit(**NJIT)
def _dot_block(x, weight, block, quarter, out):  # out[:, block b's 4 features]: block b of Q = out // 4
    if x.shape[0] <= QUARTER_BLOCKS_MAX_ROWS:  # few input rows: rows a quarter of the matrix apart
        _dot_4_rows(x, weight, block, quarter, out)  # rows b + (0, 1, 2, 3) * Q
    else:  # many: four neighbours
        _dot_4_rows(x, weight, 4 * block, 1, out)  # rows 4b + (0, 1, 2, 3)


@njit(inline="always", **NJIT)
def _linear_rows_blocks(x, weight, out):  # [N, in], [out, in] -> out [N, out]; blocks of 4 features
    """Block b dots four weight rows with every input row: for few input rows, rows b, b + Q,
    b + 2Q and b + 3Q (Q = out // 4); for many, rows 4b to 4b + 3.

    Rows a quarter of the matrix apart, not four neighbours: as b goes up, each thread reads four
    long runs of consecutive rows, which the CPU's prefetcher follows. Four neighbouring rows
    (of 2 KB at in = 512) start four new short runs per block; with few input rows the product
    waits on memory. Measured (docs/performance.md, the (1, 8) bound): never slower, up to 1.3x
    faster from DRAM on 4-8 rows, but by how much changes with the machine's state (whole
    passes at (1, 8): 0.75-0.84x the time in one comparison, the same in two later ones).
    From ``QUARTER_BLOCKS_MAX_ROWS`` rows on, each block is reused by many input rows and
    neighbouring rows are faster (their outputs share cache lines). Each output is the same
    dot product either way, so the same bits.
    """
    quarter = weight.shape[0] // 4  # Q blocks
    for block in prange(quarter):  # split over the threads where the caller has them
        _dot_block(x, weight, block, quarter, out)
    for n in range(4 * quarter, weight.shape[0]):  # the last out % 4 features
        _dot_rows(x, weight, n, out)


@njit(**NJIT)
def _linear_rows_serial(x, weight, out):  # the same on one thread (compiled without threads)
    _linear_rows_blocks(x, weight, out)


@njit(inline="always", **NJIT)
def _linear_rows(x, weight):  # [N, in], [out, in] -> [N, out]: linear_rows' body, inlined where it is called
    out = np.zeros((x.shape[0], weight.shape[0]), x.dtype)  # [N, out]
    if x.shape[0] * weight.size >= PARALLEL_MIN_MACS:
        _linear_rows_blocks(x, weight, out)  # inlined: on the caller's threads
    else:
        _linear_rows_serial(x, weight, out)
    return out


@njit(**NJIT)
def _dot_4_rows_of_3(x, wq, wk, wv, i, quarter, q, k, v):  # block i of the three products' 3 * quarter
    which = i // quarter  # 0, 1, 2: query, key, value
    weight, out = (wq, q) if which == 0 else (wk, k) if which == 1 else (wv, v)
    _dot_block(x, weight, i - which * quarter, quarter, out)  # block i - which * Q of that product


@njit(inline="always", **NJIT)
def _query_key_value_blocks(x, wq, wk, wv, q, k, v):  # the three products [N, H] @ [H, H].T, one loop
    quarter = wq.shape[0] // 4  # blocks of 4 features in each product, as in _linear_rows_blocks
    for i in prange(3 * quarter):  # split over the threads where the caller has them
        _dot_4_rows_of_3(x, wq, wk, wv, i, quarter, q, k, v)
    for n in range(quarter * 4, wq.shape[0]):  # the last H % 4 features of each
        _dot_rows(x, wq, n, q)
        _dot_rows(x, wk, n, k)
        _dot_rows(x, wv, n, v)


@njit(**NJIT)
def _query_key_value_serial(x, wq, wk, wv, q, k, v):  # the same on one thread (compiled without threads)
    _query_key_value_blocks(x, wq, wk, wv, q, k, v)


@njit(inline="always", **NJIT)
def _query_key_value(x, wq, wk, wv):  # [N, H] -> q, k, v [N, H]: x @ wq.T, x @ wk.T, x @ wv.T, no bias
    q = np.zeros((x.shape[0], wq.shape[0]), x.dtype)  # [N, H]
    k = np.zeros((x.shape[0], wk.shape[0]), x.dtype)
    v = np.zeros((x.shape[0], wv.shape[0]), x.dtype)
    if 3 * x.shape[0] * wq.size >= PARALLEL_MIN_MACS:  # one split over the threads for all three
        _query_key_value_blocks(x, wq, wk, wv, q, k, v)  # inlined: on the caller's threads
    else:
        _query_key_value_serial(x, wq, wk, wv, q, k, v)
    return q, k, v


@njit(parallel=PRANGE_ONLY, **NJIT)
def linear_rows(x, weight):  # [N, in], [out, in] -> [N, out]
    """``x @ weight.T`` for few rows, without bias: equals ``ops.linear(x, weight, 0)``.

    Reads ``weight`` once, in its stored [out, in] layout, four rows at a time (rows a quarter
    of the matrix apart, so that each thread reads long runs of memory), each block dotted with
    four input rows at a time (summed in vector lanes, so in another order than BLAS); the
    blocks of four are split over Numba's threads from ``PARALLEL_MIN_MACS`` multiply-adds.
    """
    return _linear_rows(x, weight)


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
# Attention: one fused kernel per head, the heads split over the threads
# ---------------------------------------------------------------------------------------

QUERY_BLOCK = 64  # query rows whose scores [QUERY_BLOCK, T] are computed at once (128 KB at T = 512)


@njit(fastmath={"contract"}, **NJIT)
def _add_scores(q, key_t, scores):  # scores [n, T] += q [n, D] @ K^T [D, T]
    D = q.shape[1]
    for i in range(q.shape[0]):
        row = scores[i]  # [T]
        for d in range(0, D - 3, 4):  # four outer products per pass over the row: one load and store of it, not four
            q0, q1, q2, q3 = q[i, d], q[i, d + 1], q[i, d + 2], q[i, d + 3]
            k0, k1, k2, k3 = key_t[d], key_t[d + 1], key_t[d + 2], key_t[d + 3]  # [T] each
            for j in range(row.shape[0]):  # a vector over the keys, no horizontal sum; d's order as one at a time
                row[j] = row[j] + q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j]
        for d in range(D // 4 * 4, D):  # the last D % 4 outer products
            q_d, key_d = q[i, d], key_t[d]
            for j in range(row.shape[0]):
                row[j] += q_d * key_d[j]


@njit(**NJIT)
def _attention_head(query, key, value, mask_bias, bq, bk, bv, b, a, head_size, scale, out):
    """Head ``a`` of sequence ``b``: softmax(Q K^T / sqrt(D) + mask) V into out[b, :, aD:(a+1)D].

    The head's Q, K^T and V^T are copied out of the [B, T, H] products with their biases
    added. Queries are taken ``QUERY_BLOCK`` rows at a time: their scores [n, T] (outer
    products over D: vectors over the keys), the scale, kernels' masked softmax row, then the
    context [n, D] as dot products of each probability row with each row of V^T (summed in
    vector lanes over the keys). Only [n, T] of scores and probabilities exist at a time,
    never the [B, A, T, T] arrays.
    """
    T, D, lo = query.shape[1], head_size, a * head_size  # this head's columns: lo, ..., lo + D - 1
    q, key_t, value_t = np.empty((T, D), query.dtype), np.empty((D, T), query.dtype), np.empty((D, T), query.dtype)
    for t in range(T):  # this head's slice of each token, plus the bias
        for d in range(D):
            q[t, d] = query[b, t, lo + d] + bq[lo + d]  # [T, D]
            key_t[d, t] = key[b, t, lo + d] + bk[lo + d]  # [D, T]: K transposed
            value_t[d, t] = value[b, t, lo + d] + bv[lo + d]  # [D, T]: V transposed
    rows = min(QUERY_BLOCK, T)
    scores, probs = np.empty((rows, T), query.dtype), np.empty((rows, T), query.dtype)  # [rows, T] each
    context, bits = np.empty((rows, D), query.dtype), np.empty(T, np.int32)  # [rows, D]; softmax scratch
    for t0 in range(0, T, rows):  # queries t0, ..., t0 + n - 1
        n = min(rows, T - t0)
        s, p, c = scores[:n], probs[:n], context[:n]  # [n, T], [n, T], [n, D]
        for i in range(n):  # (loops, not s[:] = 0: Numba compiles slice assignments slowly)
            for j in range(T):
                s[i, j] = 0
        _add_scores(q[t0:t0 + n], key_t, s)  # [n, T]: Q K^T
        for i in range(n):
            for j in range(T):
                s[i, j] *= scale  # as kernels.attention_scores: the product, then the scale
            _masked_softmax_row(s[i], mask_bias[b], p[i], bits)  # kernels.masked_softmax's row
        for i in range(n):
            for d in range(D):
                c[i, d] = 0
        _linear_rows_serial(p, value_t, c)  # [n, D] = P V: each probability row . each row of V^T
        for i in range(n):  # into this head's columns of the output
            for d in range(D):
                out[b, t0 + i, lo + d] = c[i, d]


@njit(inline="always", **NJIT)
def _attention(query, key, value, mask_bias, bq, bk, bv, num_heads, scale):  # attention's body, inlined
    out = np.empty_like(query)  # [B, T, H]
    B, D = query.shape[0], query.shape[2] // num_heads
    for task in prange(B * num_heads):  # every (sequence, head) pair, split over the caller's threads
        _attention_head(query, key, value, mask_bias, bq, bk, bv, task // num_heads, task % num_heads, D, scale, out)
    return out


@njit(parallel=PRANGE_ONLY, **NJIT)
def attention(query, key, value, mask_bias, bq, bk, bv, num_heads, scale):  # [B, T, H] x3 -> [B, T, H]
    """Self-attention from the raw Q, K, V products, without bias: [B, T, H] each.

    Equals the step path's ``split_heads(q + bq)`` ... ``attention_scores``, ``masked_softmax``
    (``mask_bias``: [B, T]), ``attention_context``, ``merge_heads``: the context [B, T, H].
    The B * A heads are split over Numba's threads; each is one fused kernel
    (``_attention_head``) that never builds the [B, A, T, T] scores or probabilities.
    """
    return _attention(query, key, value, mask_bias, bq, bk, bv, num_heads, scale)


# ---------------------------------------------------------------------------------------
# One layer, few rows or one sequence: everything in one Numba function
# ---------------------------------------------------------------------------------------


@njit(parallel=PRANGE_ONLY, **NJIT)
def layer_small(x, mask_bias, w, num_heads, scale, eps, kind, p):  # [B, T, H] -> [B, T, H]
    """One transformer layer (``BertModel.layer``) for few rows or one sequence, all in Numba.

    ``w``: the layer's 16 tensors in ``layer_weights`` order. ``mask_bias``: [B, T].
    """
    (wq, bq, wk, bk, wv, bv, wo, bo, ln1_w, ln1_b, wi, bi, wo2, bo2, ln2_w, ln2_b) = w
    B, T, H = x.shape
    rows = x.reshape(B * T, H)  # [N, H]
    q, k, v = _query_key_value(rows, wq, wk, wv)  # [N, H] each, biases added in the attention kernel
    q, k, v = q.reshape(B, T, H), k.reshape(B, T, H), v.reshape(B, T, H)  # [B, T, H] each
    context = _attention(q, k, v, mask_bias, bq, bk, bv, num_heads, scale)  # [B, T, H]
    h = _linear_rows(context.reshape(B * T, H), wo)  # [N, H]
    attended = bias_add_layer_norm(h, bo, rows, ln1_w, ln1_b, eps)  # [N, H]
    h = bias_activation(_linear_rows(attended, wi), bi, kind, p)  # [N, I]
    h = _linear_rows(h, wo2)  # [N, H]
    return bias_add_layer_norm(h, bo2, attended, ln2_w, ln2_b, eps).reshape(B, T, H)


# ---------------------------------------------------------------------------------------
# One layer, a batch of many rows: BLAS products, fused kernels between them
# ---------------------------------------------------------------------------------------


def layer_large(x, mask_bias, w, num_heads, scale, eps, kind, p):  # [B, T, H] -> [B, T, H]
    """One transformer layer (``BertModel.layer``) for a batch of many rows: BLAS products, fused kernels.

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


@functools.lru_cache(maxsize=None)
def layer_names(i):
    """Layer ``i``'s 16 weight names, ``encoder.layer.{i}.`` + ``LAYER_TENSORS`` (built once)."""
    return tuple(f"encoder.layer.{i}.{name}" for name in LAYER_TENSORS)


def layer_weights(weights, i):
    """Layer ``i``'s 16 tensors from the model's weights (no copy), in ``LAYER_TENSORS`` order."""
    return tuple(weights[name] for name in layer_names(i))


def takes_layer_small(B, T, H):
    """True when ``forward`` runs [B, T] inputs of hidden size H through ``layer_small``, False
    for ``layer_large``.

    Few rows (B*T <= ``SMALL_ROWS``): BLAS would re-pack every weight matrix to multiply a
    handful of rows. A single sequence (B = 1) of any length, from H = ``ONE_SEQUENCE_MIN_HIDDEN``:
    ``layer_large`` could only run its attention head by head (its threads split a batch's
    sequences), while ``layer_small``'s fused attention splits the heads over Numba's threads.
    A batch of more rows, or a long sequence of bert-tiny's size: BLAS's products and
    ``layer_large``'s attention are faster.
    """
    return B * T <= SMALL_ROWS or (B == 1 and H >= ONE_SEQUENCE_MIN_HIDDEN)


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
    small = takes_layer_small(B, T, config.hidden_size)
    hidden_states = [x]
    for i in range(config.num_hidden_layers):
        w = layer_weights(model.weights, i)  # layer i's 16 tensors
        if small:
            with NUMBA_THREADS_LOCK:
                x = layer_small(x, mask_bias, w, config.num_attention_heads, scale, config.layer_norm_eps, kind, p)
        else:
            x = layer_large(x, mask_bias, w, config.num_attention_heads, scale, config.layer_norm_eps, kind, p)
        if output_hidden_states:
            hidden_states.append(x)
    pooled = model.pooler(x) if model.has_pooler else None  # [B, H]: one small product, tanh
    return x, pooled, tuple(hidden_states) if output_hidden_states else None
