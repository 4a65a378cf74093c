"""Numba twins of ``ops.py``: the same functions, the same signatures, faster.

Each public function here has the name and signature of the NumPy function in ``ops`` that it
accelerates, and a docstring naming its twin; ``tests/test_kernels.py`` holds every pair equal
on random inputs (float32 and float64, T=1, odd sizes, fully masked rows, large values).
The Numba backend, ``kernels.backend`` (built at the end of this file), is ``ops`` with these
kernels in place of their twins; the functions not worth a kernel (embedding lookup, head
split and merge, the mask bias, tanh, ...) stay ``ops``'. ``BertModel(..., backend="numba")``
computes with it and nothing else changes.

How a kernel is laid out: a thin Python wrapper flattens the leading axes to rows
(``[..., H] -> [N, H]``), allocates the output and calls a jitted core that loops over rows.
Every core has two drivers: a serial one for small inputs, and a ``parallel=True`` one
(``prange`` over rows) for large ones; starting Numba's threads costs a few microseconds,
which is more than the whole job for a [1, 8, 128] input. The per-row math is written once,
in a small ``@njit`` helper both drivers call.

Matrix products stay on NumPy's BLAS (OpenBLAS), which a Numba loop cannot beat; small ones
run on one BLAS thread (see ``_matmul``).

``cache=True`` stores the compiled machine code next to this file (``__pycache__``), or in
``NUMBA_CACHE_DIR`` if that is set, so a second process starts without compiling.

Axis legend as in ``ops``: B batch, T sequence, H hidden, A heads, D head size, I intermediate.
"""

import math
import threading

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import ops

__all__ = [
    "add_layer_norm", "attention_context", "attention_scores", "backend", "gelu", "layer_norm", "linear",
    "masked_softmax", "linear_backward", "gelu_backward", "attention_scores_backward", "attention_context_backward",
    "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "silu", "swish",
]

# Below this many elements a kernel runs on one thread. A parallel launch costs more than a
# serial call, and worse: right after a BLAS product, OpenBLAS's threads are still
# spin-waiting on the cores Numba's threads need, so a parallel kernel waits for them. So the
# parallel drivers only start at 4M elements (16 MB of float32, e.g. GELU at bert-medium
# [32, 128]), where the work dwarfs the hand-over; below that one thread does it. The
# measurements behind the threshold are in docs/performance.md ("Threads").
PARALLEL_MIN_ELEMENTS = 1 << 22

# error_model="numpy": a float division by zero gives inf/nan as in NumPy instead of raising
# as in Python. Python's check is a branch in every loop that divides, which stops LLVM from
# vectorising it (GELU's loop, for one; docs/performance.md has the figures).
NJIT = dict(cache=True, nogil=True, error_model="numpy")


def _rows(x):  # [..., N] -> [R, N], C-contiguous (a view when x already is)
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


def _parallel(n):
    return n >= PARALLEL_MIN_ELEMENTS


# ---------------------------------------------------------------------------------------
# Matrix products: NumPy's BLAS, one thread for small ones
# ---------------------------------------------------------------------------------------

# OpenBLAS splits a product over its threads once M*N*K passes ~262k. For BERT's small
# products that is a loss: the threads meet at a spin-wait barrier, which costs more than the
# arithmetic saved, and on a busy machine (more runnable threads than cores) a descheduled
# worker stalls the whole product for a scheduler time slice. So products below
# GEMM_PARALLEL_MIN_MACS run on one BLAS thread, larger ones (e.g. [1024, 128] @ [128, 512] at
# batch 8 x 128 tokens) on all of them; the limit is where one core's product time makes the
# hand-over cheap (measurements in docs/performance.md, "Threads"). The BLAS thread count is
# set through OpenBLAS's C API (ctypes) and restored right after; without OpenBLAS (another
# BLAS, another OS) nothing changes.
GEMM_PARALLEL_MIN_MACS = 1 << 24  # multiply-adds


def _find_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy uses, or None."""
    import ctypes

    try:
        paths = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()}
    except OSError:  # not Linux
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("64_", ""):  # NumPy's wheels export scipy_openblas_*64_; a system OpenBLAS openblas_*
            for prefix in ("scipy_openblas", "openblas"):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    return get, set_
    return None


_OPENBLAS = _find_openblas()
# The count to restore, read once: reading it before each product instead would let two
# Python threads calling the model at once leave BLAS on one thread for good (A sets 1, B reads
# 1 as "the count to restore").
_BLAS_THREADS = _OPENBLAS[0]() if _OPENBLAS else None

# OpenBLAS's thread count is one per process, so switching it is visible to every thread: a
# product started by thread B while thread A has set 1 runs on one thread, and under some
# OpenBLAS kernels (Haswell's) a product's bits depend on its thread count. So every product
# of these kernels holds BLAS_LOCK: a small one around the switch to one thread, the product
# and the switch back; a large one around the product, so that it always runs on the default
# count and no thread switches the count meanwhile. A kernel's result then does not depend on
# other threads' kernels. The price: Python threads sharing a model take turns for their
# products (the Numba kernels, which release the GIL, still overlap), and ~0.13 us a product.
# NumPy products outside these kernels (the numpy backend, a user's code) do not take the
# lock and can still run on one thread during a small product here (docs/performance.md,
# "Threads", has the measurements and this limit).
BLAS_LOCK = threading.Lock()


def _matmul(a, b, macs, parallel_min_macs=None):  # a @ b, on one BLAS thread when the product is small
    # parallel_min_macs: the limit (default GEMM_PARALLEL_MIN_MACS; minibert.fast passes its own)
    if _OPENBLAS is None:
        return a @ b
    with BLAS_LOCK:
        if macs >= (GEMM_PARALLEL_MIN_MACS if parallel_min_macs is None else parallel_min_macs):
            return a @ b  # the default count: nobody can switch it while we hold the lock
        set_threads = _OPENBLAS[1]
        set_threads(1)
        try:
            return a @ b
        finally:
            set_threads(_BLAS_THREADS)


# ---------------------------------------------------------------------------------------
# Linear layer and the two attention products
# ---------------------------------------------------------------------------------------


def linear(x, weight, bias):  # [..., in] -> [..., out]
    """Twin of ``ops.linear``: ``x @ weight.T + bias``, computed as one 2-D GEMM.

    No Numba here: the product is BLAS's job. Three things make it faster than ``ops.linear``:
    the leading axes are flattened, because NumPy's 2-D matmul goes straight to one sgemm
    call while a 3-D ``[B, T, in] @ [in, out]`` goes through the slower batched gufunc
    loop; the bias is added in place instead of into a new array; and a
    small product runs on one BLAS thread (see ``_matmul``).
    ``weight.T`` is a free view: BLAS reads the [out, in] array transposed.
    """
    rows = x.reshape(-1, x.shape[-1])  # [N, in], N = product of the leading axes
    out = _matmul(rows, weight.T, rows.shape[0] * weight.size)  # [N, in] @ [in, out] -> [N, out]
    out += bias  # [N, out] + [out], in place
    return out.reshape(*x.shape[:-1], weight.shape[0])  # [..., out]


def linear_backward(dy, x, weight):  # [..., out], [..., in], [out, in] -> [..., in], [out, in], [out]
    """Twin of ``ops.linear_backward``: dx = dy W, dW = dy^T x, db = sum dy, as 2-D GEMMs.

    As ``linear``: flattened leading axes, and small products on one BLAS thread (measured on a
    busy 2-core machine, bert-medium [2, 12]: 161 ms per call with NumPy's threaded GEMM, under
    1 ms on one thread).
    """
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])  # [N, out], [N, in]
    macs = dy2.shape[0] * weight.size
    dx = _matmul(dy2, weight, macs)  # [N, out] @ [out, in] -> [N, in]
    dweight = _matmul(dy2.T, x2, macs)  # [out, N] @ [N, in] -> [out, in]
    return dx.reshape(*x.shape), dweight, dy2.sum(0)


def attention_scores(query, key, scale):  # [B, A, T, D], [B, A, T, D] -> [B, A, T, T]
    """Twin of ``ops.attention_scores``: Q K^T / sqrt(D), one small GEMM per head.

    NumPy loops over the B*A heads and calls BLAS for each [T, D] @ [D, T]; each product
    runs on one BLAS thread unless it is large (T = 512). The scale is applied in place.
    """
    T, D = query.shape[-2], query.shape[-1]
    scores = _matmul(query, key.transpose(0, 1, 3, 2), T * T * D)  # [B, A, T, T]
    scores *= scale
    return scores


def attention_context(probs, value):  # [B, A, T, T], [B, A, T, D] -> [B, A, T, D]
    """Twin of ``ops.attention_context``: P V, one small GEMM per head (as attention_scores)."""
    T, D = value.shape[-2], value.shape[-1]
    return _matmul(probs, value, T * T * D)  # [B, A, T, D]


def attention_scores_backward(dscores, query, key, scale):  # [B, A, T, T] -> dquery, dkey
    """Twin of ``ops.attention_scores_backward``: dQ = s dS K, dK = s dS^T Q, per head on one
    BLAS thread unless large (as ``attention_scores``)."""
    T, D = query.shape[-2], query.shape[-1]
    dquery = _matmul(dscores, key, T * T * D)  # [B, A, T, T] @ [B, A, T, D] -> [B, A, T, D]
    dquery *= scale
    dkey = _matmul(dscores.transpose(0, 1, 3, 2), query, T * T * D)  # [B, A, T, D]
    dkey *= scale
    return dquery, dkey


def attention_context_backward(dcontext, probs, value):  # [B, A, T, D] -> dprobs, dvalue
    """Twin of ``ops.attention_context_backward``: dP = dC V^T, dV = P^T dC (as ``attention_context``)."""
    T, D = value.shape[-2], value.shape[-1]
    dprobs = _matmul(dcontext, value.transpose(0, 1, 3, 2), T * T * D)  # [B, A, T, T]
    dvalue = _matmul(probs.transpose(0, 1, 3, 2), dcontext, T * T * D)  # [B, A, T, D]
    return dprobs, dvalue


# ---------------------------------------------------------------------------------------
# LayerNorm, and the residual connection fused with it
# ---------------------------------------------------------------------------------------


# fastmath "reassoc" on these two sums only: LLVM may then add in several vector lanes instead
# of one chain of dependent float64 adds (4 cycles each); the sums stay float64, so the
# different order changes the result by about 1e-16 relative.
@njit(fastmath={"reassoc"}, **NJIT)
def _row_mean(x):  # [H] -> float64 mean
    total = 0.0
    for j in range(x.shape[0]):
        total += x[j]
    return total / x.shape[0]


@njit(fastmath={"reassoc"}, **NJIT)
def _row_variance(x, mean):  # [H], float64 -> float64 biased variance
    total = 0.0
    for j in range(x.shape[0]):
        d = x[j] - mean
        total += d * d
    return total / x.shape[0]


@njit(**NJIT)
def _layer_norm_row(x, weight, bias, eps, out):  # [H] -> [H], one row
    H = x.shape[0]
    mean = _row_mean(x)  # float64 sums, whatever the input dtype
    var = _row_variance(x, mean)  # biased, as torch.nn.LayerNorm
    inv_std = 1.0 / math.sqrt(var + eps)
    for j in range(H):
        out[j] = (x[j] - mean) * inv_std * weight[j] + bias[j]


@njit(**NJIT)
def _layer_norm_serial(x, weight, bias, eps, out):  # [N, H] -> [N, H]
    for i in range(x.shape[0]):
        _layer_norm_row(x[i], weight, bias, eps, out[i])


@njit(parallel=True, **NJIT)
def _layer_norm_parallel(x, weight, bias, eps, out):  # [N, H] -> [N, H], rows split over threads
    for i in prange(x.shape[0]):
        _layer_norm_row(x[i], weight, bias, eps, out[i])


def layer_norm(x, weight, bias, eps):  # [..., H] -> [..., H]
    """Twin of ``ops.layer_norm``: LayerNorm over the last axis (biased variance)."""
    rows = _rows(x)  # [N, H]
    out = np.empty_like(rows)  # [N, H]
    core = _layer_norm_parallel if _parallel(rows.size) else _layer_norm_serial
    core(rows, weight, bias, float(eps), out)
    return out.reshape(x.shape)


@njit(**NJIT)
def _add_layer_norm_serial(x, residual, weight, bias, eps, out):  # [N, H], [N, H] -> [N, H]
    for i in range(x.shape[0]):
        s = out[i]
        for j in range(x.shape[1]):
            s[j] = x[i, j] + residual[i, j]  # the sum is rounded to the dtype, as in ops
        _layer_norm_row(s, weight, bias, eps, s)


@njit(parallel=True, **NJIT)
def _add_layer_norm_parallel(x, residual, weight, bias, eps, out):
    for i in prange(x.shape[0]):
        s = out[i]
        for j in range(x.shape[1]):
            s[j] = x[i, j] + residual[i, j]
        _layer_norm_row(s, weight, bias, eps, s)


def add_layer_norm(x, residual, weight, bias, eps):  # [..., H], [..., H] -> [..., H]
    """Twin of ``ops.add_layer_norm``: ``LayerNorm(x + residual)`` in one pass over memory."""
    rows, res = _rows(x), _rows(residual)  # [N, H] each
    out = np.empty_like(rows)  # [N, H]
    core = _add_layer_norm_parallel if _parallel(rows.size) else _add_layer_norm_serial
    core(rows, res, weight, bias, float(eps), out)
    return out.reshape(x.shape)


# ---------------------------------------------------------------------------------------
# GELU
# ---------------------------------------------------------------------------------------

# float32 erf: a rational approximation x * P(x^2) / Q(x^2) on [-4, 4] (beyond that erf is
# +-1 in float32), the one Eigen and XLA use for float32 erf ("generic_fast_erf_float").
# Measured against the C library's erf on 2M points of [-5, 5]: max error 4.2e-7 (7 ulp of
# 1.0); GELU's max error 9e-7 absolute, 2.6e-7 relative to max(1, |x|). PyTorch's own
# vectorised float32 GELU is in the same class (3.8e-7). Unlike math.erf, it has no branch
# and no call, so LLVM vectorises the loop, which it cannot do around math.erf.
@njit(**NJIT)
def _erf_float32(x):  # float32 -> float32
    x = min(max(x, np.float32(-4.0)), np.float32(4.0))  # erf = +-1 beyond
    x2 = x * x
    p = np.float32(-2.72614225801306e-10)  # numerator x * P(x^2), Horner from x^13 down
    p = p * x2 + np.float32(2.77068142495902e-08)
    p = p * x2 + np.float32(-2.10102402082508e-06)
    p = p * x2 + np.float32(-5.69250639462346e-05)
    p = p * x2 + np.float32(-7.34990630326855e-04)
    p = p * x2 + np.float32(-2.95459980854025e-03)
    p = p * x2 + np.float32(-1.60960333262415e-02)
    q = np.float32(-1.45660718464996e-05)  # denominator Q(x^2), from x^8 down
    q = q * x2 + np.float32(-2.13374055278905e-04)
    q = q * x2 + np.float32(-1.68282697438203e-03)
    q = q * x2 + np.float32(-7.37332916720468e-03)
    q = q * x2 + np.float32(-1.42647390514189e-02)
    return x * p / q


def _gelu_one(x):
    """GELU of one float, inside jitted code; Numba picks the formula for the dtype."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(_gelu_one)
def _gelu_one_for_dtype(x):  # chosen once per dtype when Numba compiles the caller
    if x == types.float32:  # every step rounded to float32, as ops.gelu on a float32 array
        half, one, sqrt2 = np.float32(0.5), np.float32(1.0), np.float32(math.sqrt(2.0))
        return lambda x: half * x * (one + _erf_float32(x / sqrt2))
    sqrt2 = math.sqrt(2.0)  # float64: the C library's erf, exactly ops.gelu
    return lambda x: 0.5 * x * (1.0 + math.erf(x / sqrt2))


@njit(**NJIT)
def _gelu_serial(x, out):  # [N] -> [N]
    for i in range(x.shape[0]):
        out[i] = _gelu_one(x[i])


@njit(parallel=True, **NJIT)
def _gelu_parallel(x, out):  # [N] -> [N], in chunks of 4096 spread over the threads
    chunk = 4096
    for c in prange((x.shape[0] + chunk - 1) // chunk):
        for i in range(c * chunk, min((c + 1) * chunk, x.shape[0])):
            out[i] = _gelu_one(x[i])


def gelu(x):  # [...] -> [...]
    """Twin of ``ops.gelu``: exact GELU, 0.5 x (1 + erf(x / sqrt(2))).

    float64 uses the C library's erf, as ``ops``; float32 uses a vectorisable erf accurate to
    a few float32 ulp (see ``_erf_float32``), as PyTorch's float32 GELU does.
    """
    flat = np.ascontiguousarray(x).reshape(-1)  # [N]
    out = np.empty_like(flat)
    core = _gelu_parallel if _parallel(flat.size) else _gelu_serial
    core(flat, out)
    return out.reshape(x.shape)


def _gelu_grad_one(x):
    """GELU's derivative at one float, inside jitted code; Numba picks the formula for the dtype."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(_gelu_grad_one)
def _gelu_grad_one_for_dtype(x):  # Phi(x) + x phi(x), as ops.gelu_backward
    if x == types.float32:
        half, one, sqrt2 = np.float32(0.5), np.float32(1.0), np.float32(math.sqrt(2.0))
        inv_sqrt_2pi = np.float32(1.0 / math.sqrt(2.0 * math.pi))
        return lambda x: half * (one + _erf_float32(x / sqrt2)) + x * np.exp(-half * x * x) * inv_sqrt_2pi
    sqrt2, sqrt_2pi = math.sqrt(2.0), math.sqrt(2.0 * math.pi)
    return lambda x: 0.5 * (1.0 + math.erf(x / sqrt2)) + x * (math.exp(-0.5 * x * x) / sqrt_2pi)


@njit(**NJIT)
def _gelu_backward_serial(dy, x, out):  # [N], [N] -> [N]
    for i in range(x.shape[0]):
        out[i] = dy[i] * _gelu_grad_one(x[i])


@njit(parallel=True, **NJIT)
def _gelu_backward_parallel(dy, x, out):  # [N], [N] -> [N], in chunks of 4096 spread over the threads
    chunk = 4096
    for c in prange((x.shape[0] + chunk - 1) // chunk):
        for i in range(c * chunk, min((c + 1) * chunk, x.shape[0])):
            out[i] = dy[i] * _gelu_grad_one(x[i])


def gelu_backward(dy, x):  # [...], [...] -> [...]
    """Twin of ``ops.gelu_backward``: dy (Phi(x) + x phi(x)), with the erf of ``gelu`` above.

    ops' elementwise C erf costs ~100 ns a value; this loop vectorises (float32) or at least
    skips NumPy's object-array round trip (float64). Measured in tests/test_grads_fd.py's
    twin test; numbers in docs/training.md.
    """
    flat_x = np.ascontiguousarray(x).reshape(-1)  # [N]
    flat_dy = np.ascontiguousarray(dy, dtype=x.dtype).reshape(-1)  # [N]
    out = np.empty_like(flat_x)
    core = _gelu_backward_parallel if _parallel(flat_x.size) else _gelu_backward_serial
    core(flat_dy, flat_x, out)
    return out.reshape(x.shape)


# ---------------------------------------------------------------------------------------
# Attention mask and softmax
# ---------------------------------------------------------------------------------------


# float32 exp that LLVM vectorises (math.exp is a scalar C-library call per element, because
# LLVM has no vector exp without Intel's SVML). Cephes' expf: exp(x) = 2^n exp(r) with
# n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in two constants so r
# is exact), exp(r) by a polynomial, and 2^n built from its IEEE bits, (n + 127) << 23, in an
# int32 scratch row read back as float32. Below EXP32_MIN the true exp is subnormal (< 1.2e-38)
# or 0: this gives 0. Above 88 it gives exp(88) (softmax only calls it on x <= 0).
# Measured max error 0.98 ulp of np.exp on [-87.3, 88]; tests/test_kernels.py holds it to 2 ulp.
EXP32_MIN = np.float32(-87.33654)  # log of the smallest normal float32
EXP32_MAX = np.float32(88.0)  # keeps n <= 127


@njit(**NJIT)
def _exp_float32(x, bits):  # [T] float32 -> exp, in place; bits: [T] int32 scratch
    for j in range(x.shape[0]):
        v = max(min(x[j], EXP32_MAX), EXP32_MIN)
        n = np.floor(v * np.float32(1.44269504088896341) + np.float32(0.5))  # round(v / ln 2)
        r = v - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)  # v - n ln 2
        p = np.float32(1.9875691500e-4)  # exp(r) = 1 + r + r^2 P(r), Horner
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        e = p * r * r + r + np.float32(1.0)  # exp(r)
        x[j] = e if x[j] >= EXP32_MIN else np.float32(0.0)
        bits[j] = (np.int32(n) + np.int32(127)) << np.int32(23)  # the IEEE bits of 2^n
    two_n = bits.view(np.float32)  # [T], 2^n
    for j in range(x.shape[0]):
        x[j] = x[j] * two_n[j]


def _exp_row(x, bits):
    """exp of a row in place, inside jitted code; Numba picks the method for the dtype."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(_exp_row)
def _exp_row_for_dtype(x, bits):  # chosen once per dtype when Numba compiles the caller
    if x.dtype == types.float32:
        return lambda x, bits: _exp_float32(x, bits)

    def exp_row(x, bits):  # float64: the C library's exp, as ops
        for j in range(x.shape[0]):
            x[j] = math.exp(x[j])

    return exp_row


# The row max of a float32 row as an integer max, which LLVM vectorises (a float max it does not:
# without fast-math flags on the whole function it must keep NaN's order, one compare at a
# time). Each float's IEEE bits, read as int32, are made into an order-preserving key: kept
# for a positive float, the 31 value bits flipped for a negative one (larger magnitude = more
# negative), so key(a) > key(b) whenever a > b (and -0 sorts just below +0). The largest key,
# mapped back (the same flip undoes itself), is the largest float: the same value as a float
# max, so the same softmax (a zero maximum of either sign gives the same differences). A row
# holding a NaN may get another "max" than before, but its softmax is NaN throughout either way.
@njit(**NJIT)
def _row_max_float32(x, bits):  # [T] float32 -> max(x); bits: [T] int32 scratch
    keys = x.view(np.int32)  # [T], the same memory
    top = np.int32(-2147483648)
    for j in range(keys.shape[0]):
        top = max(top, keys[j] ^ ((keys[j] >> 31) & np.int32(0x7FFFFFFF)))  # order-preserving key
    bits[0] = top ^ ((top >> 31) & np.int32(0x7FFFFFFF))  # the key back to the float's bits
    return bits.view(np.float32)[0]


def _row_max(x, bits):
    """max(x) of a row, inside jitted code; Numba picks the method for the dtype."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(_row_max)
def _row_max_for_dtype(x, bits):  # chosen once per dtype when Numba compiles the caller
    if x.dtype == types.float32:
        return lambda x, bits: _row_max_float32(x, bits)

    def row_max(x, bits):  # float64: one compare at a time
        m = x[0]
        for j in range(1, x.shape[0]):
            m = max(m, x[j])
        return m

    return row_max


@njit(fastmath={"reassoc"}, **NJIT)
def _row_sum(x):  # [T] -> float64 sum; "reassoc" lets LLVM add in several vector lanes, not one chain
    total = 0.0
    for j in range(x.shape[0]):
        total += x[j]
    return total


@njit(**NJIT)
def _masked_softmax_row(s, bias, out, bits):  # [T] scores, [T] mask bias -> [T] probabilities
    T = s.shape[0]
    for j in range(T):
        out[j] = s[j] + bias[j]  # the masked scores
    m = _row_max(out, bits)  # bits: [T] int32 scratch for the float32 max and exp
    for j in range(T):
        out[j] = out[j] - m  # <= 0; 0 for the row max, so the sum below is >= 1
    _exp_row(out, bits)
    inv = 1.0 / _row_sum(out)  # float64 sum of the exps
    for j in range(T):
        out[j] = out[j] * inv


@njit(**NJIT)
def _masked_softmax_serial(scores, bias, out):  # [B, R, T], [B, T] -> [B, R, T]
    bits = np.empty(scores.shape[2], np.int32)
    for b in range(scores.shape[0]):
        for r in range(scores.shape[1]):
            _masked_softmax_row(scores[b, r], bias[b], out[b, r], bits)


@njit(parallel=True, **NJIT)
def _masked_softmax_parallel(scores, bias, out):
    B, R = scores.shape[0], scores.shape[1]
    for i in prange(B * R):
        b, r = i // R, i % R
        _masked_softmax_row(scores[b, r], bias[b], out[b, r], np.empty(scores.shape[2], np.int32))


def masked_softmax(scores, mask_bias):  # [B, A, T, T], [B, 1, 1, T] -> [B, A, T, T]
    """Twin of ``ops.masked_softmax``: add the padding mask, softmax over the keys.

    A fully masked row has every score equal to ``finfo.min``, so it becomes uniform (1/T),
    as in transformers, never NaN. float64 uses the C library's exp, as ``ops``; float32 a
    polynomial exp that LLVM vectorises, within 1 ulp of ``np.exp`` (see ``_exp_float32``),
    and the float64 sum of each row's exps is summed in vector lanes.
    """
    B, A, T, K = scores.shape
    s = np.ascontiguousarray(scores).reshape(B, A * T, K)  # [B, A*T, K]: every query row
    if mask_bias.shape == (B, 1, 1, K) and mask_bias.dtype == scores.dtype and mask_bias.flags.c_contiguous:
        bias = mask_bias.reshape(B, K)  # [B, K], a view: the usual case (attention_mask_bias's output)
    else:  # a mask to broadcast (e.g. [1, 1, 1, K]) or of another dtype
        bias = np.ascontiguousarray(np.broadcast_to(mask_bias, (B, 1, 1, K)), scores.dtype).reshape(B, K)  # [B, K]
    out = np.empty_like(s)
    core = _masked_softmax_parallel if _parallel(s.size) else _masked_softmax_serial
    core(s, bias, out)
    return out.reshape(B, A, T, K)


# ---------------------------------------------------------------------------------------
# The other activations (config.SUPPORTED_ACTIVATIONS): tanh GELUs, x sigmoid(a x)
# ---------------------------------------------------------------------------------------

# One fused loop instead of NumPy's 6-8 temporaries. Each element is computed in float64 and
# rounded once to the output dtype (ops rounds every step in float32: the two differ by a few
# float32 ulp). relu and tanh are single NumPy ufuncs: the backend takes ops'. The backward
# functions of these activations are ops' too (NumPy only, for now).
GELU_TANH_CUBIC = ops.GELU_TANH_CUBIC  # module constants, frozen into the jitted code


TANH_GELU, X_SIGMOID = 0, 1  # the two shapes of formula: 0.5 x (1 + tanh(...)), x sigmoid(a x)


@njit(**NJIT)
def _activation_one(x, kind, p):  # float -> float64
    v = np.float64(x)
    if kind == TANH_GELU:  # 0.5 x (1 + tanh(p (x + 0.044715 x^3))), p = sqrt(2/pi) or 0.7978845608
        return 0.5 * v * (1.0 + math.tanh(p * v * (1.0 + GELU_TANH_CUBIC * v * v)))
    return v / (1.0 + math.exp(-p * v))  # x sigmoid(p x); exp -> inf for p x < -709 gives -0.0, as x * 0


@njit(**NJIT)
def _activation_serial(x, kind, p, out):  # [N] -> [N]
    for i in range(x.shape[0]):
        out[i] = _activation_one(x[i], kind, p)


@njit(parallel=True, **NJIT)
def _activation_parallel(x, kind, p, out):  # [N] -> [N], in chunks of 4096 spread over the threads
    chunk = 4096
    for c in prange((x.shape[0] + chunk - 1) // chunk):
        for i in range(c * chunk, min((c + 1) * chunk, x.shape[0])):
            out[i] = _activation_one(x[i], kind, p)


def _activation(x, kind, p):  # [...] -> [...]
    flat = np.ascontiguousarray(x).reshape(-1)  # [N]
    out = np.empty_like(flat)
    core = _activation_parallel if _parallel(flat.size) else _activation_serial
    core(flat, kind, p, out)
    return out.reshape(x.shape)


def gelu_new(x):  # [...] -> [...]
    """Twin of ``ops.gelu_new``: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return _activation(x, TANH_GELU, ops.GELU_TANH_SCALE)


def gelu_pytorch_tanh(x):  # [...] -> [...]
    """Twin of ``ops.gelu_pytorch_tanh``: gelu_new's formula (transformers computes it with torch's kernel)."""
    return _activation(x, TANH_GELU, ops.GELU_TANH_SCALE)


def gelu_fast(x):  # [...] -> [...]
    """Twin of ``ops.gelu_fast``: the tanh GELU with sqrt(2/pi) written 0.7978845608."""
    return _activation(x, TANH_GELU, ops.GELU_FAST_SCALE)


def quick_gelu(x):  # [...] -> [...]
    """Twin of ``ops.quick_gelu``: x sigmoid(1.702 x)."""
    return _activation(x, X_SIGMOID, ops.QUICK_GELU_SCALE)


def silu(x):  # [...] -> [...]
    """Twin of ``ops.silu``: x sigmoid(x)."""
    return _activation(x, X_SIGMOID, 1.0)


def swish(x):  # [...] -> [...]
    """Twin of ``ops.swish``: silu under another name, x sigmoid(x)."""
    return _activation(x, X_SIGMOID, 1.0)


# ---------------------------------------------------------------------------------------
# The Numba backend: ops, with the functions above in place of their twins
# ---------------------------------------------------------------------------------------


class Backend:
    """A backend built as "``ops``, with these functions replaced".

    ``backend.linear`` is the kernel; a function without a kernel (``backend.embedding``) is
    looked up in ``ops`` when it is used, so ``ops`` stays its only definition.
    """

    def __init__(self, name, overrides):
        self.__name__ = name
        self.overrides = dict(overrides)  # function name -> kernel
        vars(self).update(overrides)

    def __getattr__(self, name):  # only for names not replaced: ops' function
        return getattr(ops, name)

    def __dir__(self):
        return sorted(set(ops.__all__) | set(self.overrides))

    def __repr__(self):
        return f"<backend {self.__name__}: ops with {', '.join(sorted(self.overrides))} from kernels>"


backend = Backend("minibert.kernels.backend", {
    "linear": linear,
    "attention_scores": attention_scores,
    "attention_context": attention_context,
    "layer_norm": layer_norm,
    "add_layer_norm": add_layer_norm,
    "gelu": gelu,
    "gelu_new": gelu_new,
    "gelu_pytorch_tanh": gelu_pytorch_tanh,
    "gelu_fast": gelu_fast,
    "quick_gelu": quick_gelu,
    "silu": silu,
    "swish": swish,
    "masked_softmax": masked_softmax,
    "linear_backward": linear_backward,
    "gelu_backward": gelu_backward,
    "attention_scores_backward": attention_scores_backward,
    "attention_context_backward": attention_context_backward,
})


# ---------------------------------------------------------------------------------------
# Optimiser: twin of optim.adamw_update
# ---------------------------------------------------------------------------------------


@njit(**NJIT)
def _adamw_loop(param, grad, exp_avg, exp_avg_sq, decay, one_minus_beta1, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, neg_step_size):  # [N] each, updated in place
    for i in range(param.size):
        p = param[i] * decay
        m = exp_avg[i] + one_minus_beta1 * (grad[i] - exp_avg[i])
        v = exp_avg_sq[i] * beta2 + one_minus_beta2 * grad[i] * grad[i]
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = p + (neg_step_size * m) / (np.sqrt(v) / bias_correction2_sqrt + eps)


def adamw_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Twin of ``optim.adamw_update``: the same operations in the same order (so the same
    rounding, tested bit-identical), in one loop over the elements instead of nine NumPy passes
    with temporaries. The four arrays: C-contiguous, of the parameter's dtype."""
    dtype = param.dtype.type  # the scalars in the parameter's dtype, as NumPy uses Python floats
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    _adamw_loop(param.reshape(-1), grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
                dtype(1 - lr * weight_decay), dtype(1 - beta1), dtype(beta2), dtype(1 - beta2),
                dtype(bias_correction2**0.5), dtype(eps), dtype(-(lr / bias_correction1)))
