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
# # 2. Embeddings: from token ids to vectors
#
# BERT never sees text, only token ids (notebook 1 shows how text becomes ids). Its first
# step turns every id into a vector of `H` numbers by adding three learned vectors:
#
# * a **word** embedding: one row per vocabulary entry, `[V, H]`;
# * a **position** embedding: one row per position 0, 1, ..., `[P, H]`;
# * a **token type** (segment) embedding: row 0 for sentence A, row 1 for sentence B, `[S, H]`;
#
# and then normalising the sum with **LayerNorm**. We do all of it by hand in NumPy and check
# every number against minibert.
#
# Axis legend used in every comment: `B` batch, `T` tokens, `H` hidden size, `V` vocabulary
# size, `P` max positions, `S` token types.

# %% [markdown]
# ## Set-up
# The shared set-up (`tutorials/tutorial_setup.py`, notebook 1) puts this checkout's
# `minibert` first on the path and converts the model the first time.

# %%
import tutorial_setup  # tutorials/tutorial_setup.py: this checkout's minibert, the shared helpers
MODEL = tutorial_setup.default_model()  # weights/all-MiniLM-L6-v2.h5, converted the first time

# %%
import matplotlib.pyplot as plt
import numpy as np

import exercise_checks as check  # the exercises' checks (tutorials/exercise_checks.py)
import minibert
from minibert.tokenizer import Tokenizer

model = minibert.load(MODEL, backend="numpy")  # the readable NumPy reference (notebook 6: the Numba backend)
tokenizer = Tokenizer.from_file(MODEL)
cfg = model.config
w = model.weights  # Hugging Face name -> NumPy array (float32)
print(cfg)

# %% [markdown]
# ## A sentence as ids
# The tokenizer adds `[CLS]` at the start and `[SEP]` at the end. The model takes a batch, so
# the ids become an array of shape `[B, T]` with `B = 1`.

# %%
text = "The cat sat on the mat because it was tired."
encoding = tokenizer.encode(text)
input_ids = np.array([encoding["input_ids"]])  # [1, T]
token_type_ids = np.array([encoding["token_type_ids"]])  # [1, T], all 0: one sentence
tokens = tokenizer.convert_ids_to_tokens(input_ids[0])
B, T = input_ids.shape
print(f"B={B}, T={T}")
for t, (tok, i) in enumerate(zip(tokens, input_ids[0])):
    print(f"position {t:2d}  id {i:5d}  {tok}")

# %% [markdown]
# ## 1. Word embeddings
# The word embedding table has one row of `H` numbers per vocabulary entry. Looking a token up
# is just indexing a row; it is the same as multiplying a one-hot vector by the table.

# %%
word_table = w["embeddings.word_embeddings.weight"]  # [V, H]
print("word table", word_table.shape)

words = word_table[input_ids]  # [1, T] -> [1, T, H]
print("words", words.shape)

one_hot = (input_ids[..., None] == np.arange(cfg.vocab_size)).astype(np.float32)  # [1, T, 1] vs [V] -> [1, T, V]
np.testing.assert_array_equal(one_hot @ word_table, words)  # [1, T, V] @ [V, H] -> [1, T, H]
print("indexing a row == one-hot times the table")

# %% [markdown]
# Words with related meanings get related vectors. Cosine similarity between rows of the
# table (1 = same direction, 0 = unrelated):

# %%
def cosine(a, b):  # [..., H], [..., H] -> [...]
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def word_vector(word):  # -> [H]
    return word_table[tokenizer.convert_tokens_to_ids(word)]


for a, b in [("cat", "dog"), ("cat", "kitten"), ("cat", "democracy"), ("king", "queen")]:
    print(f"cos({a}, {b}) = {cosine(word_vector(a), word_vector(b)):.3f}")

# %% [markdown]
# ## 2. Position embeddings
# Attention (notebook 3) treats its input as a *set*: without help it cannot tell "dog bites
# man" from "man bites dog". BERT adds a learned vector per position, 0 to `P - 1`.

# %%
position_table = w["embeddings.position_embeddings.weight"]  # [P, H]
position_ids = np.arange(T)[None, :]  # [1, T]: 0, 1, ..., T-1
positions = position_table[position_ids]  # [1, T, H]
print("position table", position_table.shape, "-> positions", positions.shape)

# %% [markdown]
# Nearby positions have similar vectors: the model learned a sense of distance.

# %%
first = position_table[:64]  # [64, H]
similarity = cosine(first[:, None, :], first[None, :, :])  # [64, 1, H], [1, 64, H] -> [64, 64]

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].imshow(first, aspect="auto", cmap="RdBu_r", vmin=-0.2, vmax=0.2)
axes[0].set(title="position embeddings 0..63", xlabel="hidden dimension", ylabel="position")
im = axes[1].imshow(similarity, cmap="viridis")
axes[1].set(title="cosine similarity between positions", xlabel="position", ylabel="position")
fig.colorbar(im, ax=axes[1])
plt.show()

# %% [markdown]
# ### Learned positions, sinusoidal positions, and the 512 limit
# The original Transformer (Vaswani et al., 2017) did not learn its position vectors: it
# computed them, pairs of dimensions holding `sin(p w_i)` and `cos(p w_i)` with frequencies
# `w_i = 10000^(-2i/H)`, from fast (`w_0 = 1`) to slow. BERT *learns* one row per position
# instead (`[P, H]`, `P = max_position_embeddings = 512`). Two consequences:
#
# * a learned table has no row for position 512: BERT cannot read longer inputs, and the
#   rows near the end are learned from less data (BERT was pre-trained on sequences of 128
#   tokens for 90% of its steps and of 512 only for the last 10%, paper appendix A.2);
# * a sinusoidal vector exists for every position, and moving by `k` positions is the same
#   rotation of each pair whatever the start (Exercise 2 derives it).
#
# Both tables, side by side: the cosine similarity between positions 0..127.

# %%
def sinusoidal(P, H):  # -> [P, H]: dimensions 2i and 2i+1 hold sin and cos of p * 10000^(-2i/H)
    p = np.arange(P)[:, None]  # [P, 1]
    w = 10000.0 ** (-np.arange(0, H, 2) / H)  # [H/2], from 1 down to ~1e-4
    table = np.empty((P, H))
    table[:, 0::2] = np.sin(p * w)  # [P, H/2]
    table[:, 1::2] = np.cos(p * w)  # [P, H/2]
    return table


fixed = sinusoidal(cfg.max_position_embeddings, cfg.hidden_size)  # [P, H]
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, table, title in [(axes[0], position_table, "learned (MiniLM)"), (axes[1], fixed, "sinusoidal (Transformer)")]:
    im = ax.imshow(cosine(table[:128, None], table[None, :128]), cmap="viridis", vmin=-0.2, vmax=1)
    ax.set(title=f"{title}\ncosine between positions 0..127", xlabel="position", ylabel="position")
fig.colorbar(im, ax=axes[:2], shrink=0.8)
for start in (0, 100, 400):
    offsets = np.arange(0, 512 - start)
    axes[2].plot(offsets, cosine(position_table[start], position_table[start + offsets]), label=f"learned, from {start}")
axes[2].plot(np.arange(512), cosine(fixed[0], fixed), "k--", label="sinusoidal, from any start")
axes[2].set(xlabel="offset k", ylabel="cosine(pos p, pos p + k)", title="similarity against distance", xlim=(0, 200))
axes[2].legend(fontsize=8)
plt.show()
print("norm of the learned rows at 0, 1, 10, 100, 511:", np.linalg.norm(position_table[[0, 1, 10, 100, 511]], axis=1).round(2))

# %% [markdown]
# For the sinusoidal table the curve is the same from every start; for the learned one it
# depends on where you start. And there is no row 512:

# %%
try:
    model(np.full((1, cfg.max_position_embeddings + 1), tokenizer.convert_tokens_to_ids("the")))
except minibert.errors.MinibertError as e:
    print(f"{type(e).__name__}: {e}")

# %% [markdown]
# ## 3. Token type embeddings
# For a pair of sentences (question and answer, premise and hypothesis) the first segment gets
# type 0 and the second type 1. A single sentence is all type 0.

# %%
type_table = w["embeddings.token_type_embeddings.weight"]  # [S, H]
types = type_table[token_type_ids]  # [1, T] -> [1, T, H]
print("type table", type_table.shape, "-> types", types.shape)

# %% [markdown]
# ## 4. The sum
# The three vectors are added, element by element. `positions` has batch size 1 and is
# broadcast over the batch. (minibert adds them in the same order as transformers, words +
# types + positions, so that even the float32 rounding is the same.)

# %%
summed = words + types + positions  # [1, T, H] + [1, T, H] + [1, T, H] -> [1, T, H]
print("sum", summed.shape)

# %% [markdown]
# minibert passes every step through a *tap* `tap(name, value)`, named after the PyTorch
# module. A tap that keeps a copy of each value lets us compare with every intermediate step:

# %%
seen = {}


def record(name, value):  # a tap: remember the value under its name, change nothing
    seen[name] = value
    return value


out = model(input_ids, token_type_ids=token_type_ids, output_hidden_states=True, tap=record)
print([name for name in seen if name.startswith("embeddings")])
np.testing.assert_array_equal(summed, seen["embeddings.sum"])
print("our sum == minibert's embeddings.sum")

# %% [markdown]
# ## 5. LayerNorm
# Each token's vector is normalised on its own: subtract its mean, divide by its standard
# deviation (the *biased* variance, dividing by `H`, as PyTorch), then scale by a learned
# `weight` (gamma) and shift by a learned `bias` (beta). `eps` (from the config) keeps the
# division safe.

# %%
gamma = w["embeddings.LayerNorm.weight"]  # [H]
beta = w["embeddings.LayerNorm.bias"]  # [H]
eps = cfg.layer_norm_eps

mean = summed.mean(-1, keepdims=True)  # [1, T, 1]
var = ((summed - mean) ** 2).mean(-1, keepdims=True)  # [1, T, 1], biased: divide by H
normalized = (summed - mean) / np.sqrt(var + eps)  # [1, T, H], each token: mean 0, variance 1
embedded = normalized * gamma + beta  # [1, T, H]

print("largest |mean| of a token after normalising:", np.abs(normalized.mean(-1)).max())  # ~0
print("std of each token after normalising:", np.round(normalized.std(-1)[0], 4))  # 1
np.testing.assert_allclose(embedded, seen["embeddings.LayerNorm"], rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(embedded, out.hidden_states[0], rtol=1e-5, atol=1e-5)
print("our LayerNorm == minibert's embeddings.LayerNorm == hidden_states[0]")

# %% [markdown]
# Before LayerNorm each token's numbers have their own scale; afterwards all tokens share the
# scale set by gamma and beta:

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
for t in range(T):
    axes[0].hist(summed[0, t], bins=60, histtype="step", color=plt.cm.tab20(t), label=f"{t}: {tokens[t]}")
    axes[1].hist(embedded[0, t], bins=60, histtype="step", color=plt.cm.tab20(t))
axes[0].set(title="words + types + positions (one line per token)", xlabel="value", ylabel="count of the H numbers")
axes[1].set(title="after LayerNorm", xlabel="value", ylabel="count of the H numbers")
fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8, title="token")
fig.subplots_adjust(right=0.86)
plt.show()

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py).
#
# **Exercise 1. What does LayerNorm undo?** For each change below, made to the sum
# `words + types + positions` before LayerNorm, predict whether the output of
# `embeddings.LayerNorm` stays the same (up to float32 rounding). Answer with `True` (same)
# or `False` (changes) *before* running anything; the check measures each change in the real
# model and tells you which predictions were wrong. Then explain each answer with the formula.

# %%
def layer_norm_undoes():  # -> {change: True if embeddings.LayerNorm is unchanged}
    ### BEGIN SOLUTION
    return {
        "add 5 to every number": True,  # the mean absorbs it
        "multiply every number by 3": True,  # the standard deviation absorbs it (eps is tiny)
        "multiply each token's vector by its own positive number": True,  # normalised per token
        "multiply every number by -1": False,  # flips the sign of (x - mean) / std
        "add 5 to hidden dimension 0 only": False,  # changes the token's shape, not just its level
        "add the same vector to every token": False,  # a different shift per dimension
    }
    ### END SOLUTION


# %%
check.layer_norm_undoes(layer_norm_undoes)
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. Moving by k positions is a rotation.** For the sinusoidal table, the vector
# of position `p + k` is the vector of position `p` times a fixed `[H, H]` matrix `M_k`, the
# same for every `p`. Derive `M_k` (hint: `sin(a + b)` and `cos(a + b)`, pair by pair) and
# write `shift_matrix(k, H)`. The check tests `sinusoidal(P, H)[p + k] == sinusoidal(P, H)[p] @
# shift_matrix(k, H)` for many `p` and `k`. (A learned table has no such matrix: that is
# why the curves above depend on the start.)

# %%
def shift_matrix(k, H):  # -> [H, H] with sinusoidal(.)[p] @ M == sinusoidal(.)[p + k]
    ### BEGIN SOLUTION
    M = np.zeros((H, H))
    for i, w_i in enumerate(10000.0 ** (-np.arange(0, H, 2) / H)):
        c, s = np.cos(k * w_i), np.sin(k * w_i)
        # row vector [sin a, cos a] @ [[c, -s], [s, c]] = [sin a c + cos a s, -sin a s + cos a c]
        M[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, -s], [s, c]]
    return M
    ### END SOLUTION


# %%
check.shift_matrix(shift_matrix)
### BEGIN HIDDEN TESTS
check.shift_matrix(shift_matrix, H=64, shifts=(3, 250))
### END HIDDEN TESTS
print("Exercise 2 passed")
