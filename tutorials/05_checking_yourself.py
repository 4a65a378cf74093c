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
# This notebook is an optional engineering detour: it is about how to *trust* an
# implementation, not about BERT itself. The comparisons with PyTorch need the `dev` extra
# (`pip install -e '.[dev]'`: torch, transformers). Without it, the cells that need PyTorch
# say so and are skipped, and minibert's own float64 model stands in as the reference: that
# checks float32 rounding and finds the planted bugs, but it is not an independent
# implementation.

# %% [markdown]
# ## Set-up
# The shared set-up (`tutorials/tutorial_setup.py`, notebook 1) puts this checkout's
# `minibert` first on the path and converts the model the first time.

# %%
import tutorial_setup  # tutorials/tutorial_setup.py: this checkout's minibert, the shared helpers
MODEL = tutorial_setup.default_model()  # weights/all-MiniLM-L6-v2.h5, converted the first time

# %%
import types

import matplotlib.pyplot as plt
import numpy as np

import exercise_checks as check  # the exercises' checks (tutorials/exercise_checks.py)
import minibert
from minibert import ops, reference
from minibert.tokenizer import Tokenizer

model = minibert.load(MODEL, backend="numpy")  # the readable NumPy reference (notebook 6: the Numba backend)
tokenizer = Tokenizer.from_file(MODEL)
cfg = model.config
batch = tokenizer.encode_batch(["The cat sat on the mat because it was tired.", "Hello world!"])
ids, mask = batch["input_ids"], batch["attention_mask"]  # [2, T] each: a padded batch, so the mask is tested too

# %% [markdown]
# ## First, by hand: minibert and PyTorch on the same input
# `reference.torch_model` builds transformers' `BertModel` and loads the **same** tensors from
# the `.h5` file.

# %%
if tutorial_setup.have_torch("minibert against PyTorch, hidden state by hidden state"):
    import torch

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
# The hidden states are only the outputs of whole layers. A trace has every step. The
# reference trace comes from PyTorch when it is installed, otherwise from minibert in float64:

# %%
ours = model.trace(ids, attention_mask=mask)
if tutorial_setup.have_torch("the PyTorch reference trace (minibert in float64 stands in)"):
    theirs = reference.trace(MODEL, ids, attention_mask=mask)
else:
    theirs = minibert.load(MODEL, dtype="float64", backend="numpy").trace(ids, attention_mask=mask)
print(len(ours), "steps, for example:")
print(ours.summary().splitlines()[0])
print("\n".join(ours.summary().splitlines()[1:12]))
step_names = list(ours)  # every step, in execution order

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
plt.semilogy(errors, ".", label="max |minibert - reference|")
plt.semilogy(tolerances, "-", label="tolerance")
plt.xlabel("step of the forward pass, in execution order")
plt.ylabel("max abs error (log scale)")
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
plt.ylabel("max abs error (log scale; 1e-9 = exact)")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Float64: a tighter test
# In float64 both implementations are exact to about 15 digits, and the tolerance is 100,000
# times tighter. Trace both in float64 and compare:

# %%
if tutorial_setup.have_torch("float64 parity with PyTorch"):
    ours64 = minibert.load(MODEL, dtype="float64", backend="numpy").trace(ids, attention_mask=mask)
    result64 = minibert.compare(ours64, reference.trace(MODEL, ids, attention_mask=mask, dtype="float64"))
    worst = max(result64.rows, key=lambda r: r.max_abs_error / r.tolerance)
    print(f"float64: {sum(r.passed for r in result64.rows)}/{len(result64.rows)} steps within tolerance; "
          f"the worst, {worst.name}, uses {worst.max_abs_error / worst.tolerance:.1e} of its tolerance")
    assert result64.passed

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py); they use minibert's float64 model as the
# reference, so they run without PyTorch.
#
# **Exercise 1. Predict what a change breaks.** Three patches, each made to one step of the
# forward pass. For each, predict **the list of steps that `compare` will report as failing**
# (use `step_names`, the steps in execution order, e.g.
# `step_names[step_names.index(x):]` for "x and everything after it"). Write your
# predictions *before* running the patches, then explain each with the formula of the step
# that follows the patched one.
#
# * `"embeddings.sum x 3"`: `embeddings.sum` multiplied by 3;
# * `"layer 2 scores + 5"`: 5 added to every score of `encoder.layer.2.attention.self.scores`
#   (padding keys included);
# * `"layer 2 scores x 3"`: those scores multiplied by 3.

# %%
def predicted_failures():  # -> {patch: list of step names that fail}
    ### BEGIN SOLUTION
    scores = "encoder.layer.2.attention.self.scores"
    return {
        "embeddings.sum x 3": ["embeddings.sum"],  # LayerNorm divides the factor out again
        "layer 2 scores + 5": [scores],  # softmax(s + c) == softmax(s): the probabilities do not change
        "layer 2 scores x 3": step_names[step_names.index(scores):],  # a sharper softmax: everything after changes
    }
    ### END SOLUTION


# %%
check.predicted_failures(predicted_failures)
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. Swap two heads.** Write `swap_heads(value, i, j)`, a patch function that
# returns a copy of a `[B, T, H]` value with the columns of heads `i` and `j` (head `h` owns
# columns `h*D : (h+1)*D`) exchanged, leaving its input untouched. Careful: NumPy slices are
# *views*, so a swap written as one tuple assignment on the same array may copy one head
# into both places. Then patch `encoder.layer.1.attention.self.value` with it and look at
# the first failure `compare` reports.

# %%
def swap_heads(value, i, j):  # [B, T, H], head, head -> [B, T, H]
    ### BEGIN SOLUTION
    swapped = value.copy()
    swapped[..., i * D : (i + 1) * D] = value[..., j * D : (j + 1) * D]
    swapped[..., j * D : (j + 1) * D] = value[..., i * D : (i + 1) * D]
    return swapped
    ### END SOLUTION


# %%
check.swap_heads(swap_heads)
patched = model.trace(ids, attention_mask=mask, patch={"encoder.layer.1.attention.self.value": lambda v: swap_heads(v, 0, 1)})
print("first failure:", minibert.compare(patched, theirs).first_failure.name)
print("Exercise 2 passed")
