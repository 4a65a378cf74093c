# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Making it fast: NumPy and Numba, side by side
#
# minibert keeps two versions of the steps that matter for speed:
#
# * `minibert.ops`: the readable NumPy reference, which notebooks 2 to 4 rebuilt by hand;
# * `minibert.kernels`: **Numba** twins with the same names and signatures, compiled to
#   machine code.
#
# The model picks one module in one place (`backend="numpy"` or `backend="numba"`), and tests
# hold each pair equal. Here we see why a kernel helps, what Numba's just-in-time (JIT)
# compilation does, and we time both on the real model.
#
# Timings depend on the machine and on what else runs on it: read them as ratios, and run the
# cells again if your numbers look odd.

# %% [markdown]
# ## Set-up
# The shared set-up (`tutorials/tutorial_setup.py`, notebook 1) puts this checkout's
# `minibert` first on the path and converts the model the first time.

# %%
import tutorial_setup  # tutorials/tutorial_setup.py: this checkout's minibert, the shared helpers
MODEL = tutorial_setup.default_model()  # weights/all-MiniLM-L6-v2.h5, converted the first time

# %%
import math
import time
import types

import matplotlib.pyplot as plt
import numpy as np
from numba import njit

import exercise_checks as check  # the exercises' checks (tutorials/exercise_checks.py)
import minibert
from minibert import kernels, ops
from minibert.tokenizer import Tokenizer

tokenizer = Tokenizer.from_file(MODEL)


def best_time(fn, *args, repeat=5):
    """The fastest of `repeat` runs, in seconds: the least disturbed by other programs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


# %% [markdown]
# ## One step: GELU
# GELU needs `erf`, which NumPy does not have. `ops.gelu` calls Python's `math.erf` once per
# number (`np.frompyfunc`): exact, readable, and slow, because every element goes through the
# Python interpreter. The feed-forward input of one layer for a batch of 4 sentences of 128
# tokens has `4 * 128 * 1536 = 786,432` numbers:

# %%
rng = np.random.default_rng(0)
u = rng.standard_normal((4, 128, 1536)).astype(np.float32)  # [B, T, I]

t_numpy = best_time(ops.gelu, u, repeat=2)
kernels.gelu(u)  # the first call may compile (see below)
t_numba = best_time(kernels.gelu, u)
print(f"ops.gelu     (NumPy + math.erf): {t_numpy * 1e3:8.1f} ms")
print(f"kernels.gelu (Numba)           : {t_numba * 1e3:8.1f} ms   ({t_numpy / t_numba:.0f}x faster)")

# %% [markdown]
# Are they equal? In float32 the kernel uses a fast polynomial approximation of `erf`
# accurate to a few units in the last place (as PyTorch's own float32 GELU does), so the two
# differ by rounding only; in float64 the kernel calls the same C `erf` as `ops`.

# %%
diff32 = np.abs(ops.gelu(u).astype(np.float64) - kernels.gelu(u)).max()
u64 = u[:1].astype(np.float64)
diff64 = np.abs(ops.gelu(u64) - kernels.gelu(u64)).max()
print(f"max |ops - kernels|: float32 {diff32:.1e}, float64 {diff64:.1e}")
assert diff32 < 1e-5 and diff64 < 1e-12

# %% [markdown]
# ## What JIT compilation does
# `@njit` turns a Python function into machine code the **first time it is called**: Numba
# looks at the types of the arguments (say, a 2-D float32 array), infers the type of every
# variable, and compiles a version for exactly those types with LLVM. Later calls with the
# same types run the compiled code directly; a call with new types (float64) compiles another
# version. Loops that would be slow in Python become as fast as C.
#
# Let us write a LayerNorm kernel ourselves, one row at a time with plain loops:

# %%
@njit
def layer_norm_rows(x, weight, bias, eps):  # [N, H] -> [N, H]
    out = np.empty_like(x)
    N, H = x.shape
    for i in range(N):
        mean = 0.0
        for j in range(H):
            mean += x[i, j]
        mean /= H
        var = 0.0
        for j in range(H):
            var += (x[i, j] - mean) ** 2
        var /= H  # biased, as PyTorch
        inv_std = 1.0 / math.sqrt(var + eps)
        for j in range(H):
            out[i, j] = (x[i, j] - mean) * inv_std * weight[j] + bias[j]
    return out


x = rng.standard_normal((8 * 128, 384)).astype(np.float32)  # [N, H]
gamma = (1 + 0.1 * rng.standard_normal(384)).astype(np.float32)  # [H]
beta = (0.1 * rng.standard_normal(384)).astype(np.float32)  # [H]

calls = []
for label, array in [("1st call, float32", x), ("2nd call, float32", x), ("1st call, float64", x.astype(np.float64)), ("2nd call, float64", x.astype(np.float64))]:
    start = time.perf_counter()
    layer_norm_rows(array, gamma, beta, 1e-12)
    calls.append((label, time.perf_counter() - start))
    print(f"{label}: {calls[-1][1] * 1e3:9.2f} ms")
print("compiled versions:", layer_norm_rows.signatures)

np.testing.assert_allclose(layer_norm_rows(x, gamma, beta, 1e-12), ops.layer_norm(x, gamma, beta, 1e-12), rtol=1e-5, atol=1e-5)
print("our kernel == ops.layer_norm")
assert len(layer_norm_rows.signatures) == 2  # one machine-code version per argument types
assert calls[0][1] > calls[1][1]  # the first call paid for the compilation

# %% [markdown]
# The first call of each type takes a fraction of a second to a few seconds: that is the
# compiler. minibert's kernels use `@njit(cache=True)`, which saves the machine code on disk
# (in `minibert/__pycache__`, or `NUMBA_CACHE_DIR`), so the next Python process starts without
# compiling. They also have a `parallel=True` driver that splits the rows over the CPU cores
# (`prange`), used only for inputs of at least `kernels.PARALLEL_MIN_ELEMENTS` numbers: below
# that, starting threads costs more than it saves.
#
# Our loop kernel against NumPy's whole-array LayerNorm and minibert's kernel:

# %%
t_ops = best_time(ops.layer_norm, x, gamma, beta, 1e-12)
t_ours = best_time(layer_norm_rows, x, gamma, beta, 1e-12)
t_kernel = best_time(kernels.layer_norm, x, gamma, beta, 1e-12)
for name, t in [("ops.layer_norm (NumPy)", t_ops), ("our loop kernel", t_ours), ("kernels.layer_norm", t_kernel)]:
    print(f"{name:24s} {t * 1e3:7.2f} ms   {t_ops / t:4.1f}x")
print(f"{x.size:,} numbers; threads are used from kernels.PARALLEL_MIN_ELEMENTS = {kernels.PARALLEL_MIN_ELEMENTS:,}")

# %% [markdown]
# NumPy is already fast here (each operation is a C loop over the whole array), but it makes
# several passes over memory and allocates temporaries (`x - mean`, its square, ...); a
# kernel reads each row once. The gain is small compared with GELU, where NumPy fell back to
# Python for every number. Our input has `1024 * 384 = 393,216` numbers, below
# `kernels.PARALLEL_MIN_ELEMENTS` (printed below), so `kernels.layer_norm` runs it on one
# thread, like our loop; the difference between the two is the vectorised float64 sums of
# minibert's kernel. On a busy machine any of these timings can move: measure before you
# believe.
# Matrix products stay with NumPy on both backends: they call BLAS, which a hand-written loop
# cannot beat.

# %% [markdown]
# ## The whole model on both backends
# `minibert.load(path, backend=...)` chooses the module; nothing else changes. First we check
# that both compute the same thing, step by step, then we time them on a batch.

# %%
model_numpy = minibert.load(MODEL, backend="numpy")
model_numba = minibert.load(MODEL, backend="numba")
print("backends:", model_numpy.F.__name__, "and", model_numba.F.__name__)

texts = ["The cat sat on the mat because it was tired.", "Numba compiles Python loops to machine code."] * 2
batch = tokenizer.encode_batch(texts, max_length=32, truncation=True, padding="max_length")
ids, mask = batch["input_ids"], batch["attention_mask"]  # [4, 32] each

result = minibert.compare(model_numba.trace(ids, attention_mask=mask), model_numpy.trace(ids, attention_mask=mask))
print(result.table().splitlines()[-1])
assert result.passed

# %%
t_np = best_time(model_numpy, ids, mask, repeat=2)
t_nb = best_time(model_numba, ids, mask, repeat=2)
print(f"batch {ids.shape}: numpy backend {t_np * 1e3:.0f} ms, numba backend {t_nb * 1e3:.0f} ms ({t_np / t_nb:.1f}x)")

# %% [markdown]
# One more thing happens in that timing. A Numba model called with nothing to record (no
# trace, no tap, no attention maps) runs **the fast path**, `minibert/fast.py`: the same
# computation in fewer, larger steps (each bias added by the kernel that reads its product,
# one sentence's layer in a single Numba function). Tests hold it equal to the step-by-step
# path to rounding; `model_numba.use_fast_path = False` turns it off, and every trace or tap
# (as below) takes the step-by-step path.
#
# Where does the time go? A trace records every step; timing each step needs a tap that
# notes the clock between steps. (Each step's time is charged to the step that ends it.)

# %%
def time_steps(model, ids, mask):  # -> {kind of step: seconds}
    spent, last = {}, [time.perf_counter()]

    def clock(name, value):  # a tap: add the time since the previous step to this step's kind
        now = time.perf_counter()
        kind = name.split(".")[-1] if name.startswith("encoder.") else name.split(".")[0]
        spent[kind] = spent.get(kind, 0.0) + now - last[0]
        last[0] = now
        return value

    model(ids, mask, tap=clock)
    return spent


steps_np, steps_nb = time_steps(model_numpy, ids, mask), time_steps(model_numba, ids, mask)
kinds = sorted(steps_np, key=steps_np.get, reverse=True)[:8]
pos = np.arange(len(kinds))
plt.figure(figsize=(10, 3.5))
plt.barh(pos + 0.2, [steps_np[k] * 1e3 for k in kinds], height=0.4, label="numpy")
plt.barh(pos - 0.2, [steps_nb[k] * 1e3 for k in kinds], height=0.4, label="numba")
plt.yticks(pos, kinds)
plt.xlabel("milliseconds (all layers)")
plt.legend()
plt.title("time per kind of step, one forward pass")
plt.show()
print("slowest on numpy:", kinds[0])

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py).
#
# **Exercise 1.** Write a Numba kernel `softmax_rows(s)` for a 2-D array `[N, K]`: for each
# row, subtract its maximum, exponentiate, divide by the sum. It must match `ops.softmax`,
# in float32 and float64, also on rows whose scores are all around +1000 or all around -1000
# (float32's `exp` overflows above about 88), and on rows masked with `finfo.min`.

# %%
@njit
def softmax_rows(s):  # [N, K] -> [N, K]
    ### BEGIN SOLUTION
    out = np.empty_like(s)
    for i in range(s.shape[0]):
        m = s[i, 0]
        for j in range(1, s.shape[1]):
            m = max(m, s[i, j])
        total = 0.0
        for j in range(s.shape[1]):
            out[i, j] = math.exp(s[i, j] - m)
            total += out[i, j]
        for j in range(s.shape[1]):
            out[i, j] /= total
    return out
    ### END SOLUTION


# %%
check.softmax_rows(softmax_rows)
scores = (5 * np.random.default_rng(0).standard_normal((12 * 64, 64))).astype(np.float32)  # [N, K]
print(f"softmax: ops {best_time(ops.softmax, scores) * 1e3:.2f} ms, yours {best_time(softmax_rows, scores) * 1e3:.2f} ms")
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. A backend of your own.** Write `make_backend(layer_norm_kernel)`: a
# module-like object with every function of `ops`, in which **every** LayerNorm of the model
# is computed by `layer_norm_kernel` (a function `[N, H] -> [N, H]` such as
# `layer_norm_rows`; reshape `[..., H]` to `[N, H]` and back). Read `minibert/model.py` to
# find which functions of the backend compute LayerNorms. The check counts the kernel's calls
# in one forward pass and compares the whole pass with the NumPy backend.

# %%
def make_backend(layer_norm_kernel):  # [N, H] kernel -> backend (a namespace of ops' functions)
    ### BEGIN SOLUTION
    backend = types.SimpleNamespace(**vars(ops))

    def layer_norm(x, weight, bias, eps):  # [..., H] -> [..., H]
        return layer_norm_kernel(x.reshape(-1, x.shape[-1]), weight, bias, eps).reshape(x.shape)

    backend.layer_norm = layer_norm
    backend.add_layer_norm = lambda x, residual, weight, bias, eps: layer_norm(x + residual, weight, bias, eps)
    return backend
    ### END SOLUTION


# %%
check.make_backend(make_backend, layer_norm_rows)
my_model = minibert.load(MODEL, backend="numpy")
my_model.F = make_backend(layer_norm_rows)
print(minibert.compare(my_model.trace(ids, attention_mask=mask), model_numpy.trace(ids, attention_mask=mask)).table().splitlines()[-1])
print("Exercise 2 passed")
