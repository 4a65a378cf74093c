# %% [markdown]
# # 7. Using the model: sentence similarity, fill-mask, pre-training, classification
#
# The encoder gives one vector per token (`last_hidden_state`, `[B, T, H]`). Tasks put a small
# network, a **head**, on top:
#
# | task | reads | head | output |
# | --- | --- | --- | --- |
# | sentence similarity | every token | mean pooling, L2 normalisation (no weights) | `[B, H]` unit vectors |
# | fill-mask (masked LM) | the `[MASK]` tokens | dense, GELU, LayerNorm, decoder tied to the word embeddings | `[N, V]` scores |
# | classification | `[CLS]` via the pooler | one linear layer | `[B, labels]` scores |
#
# Sentence similarity runs on the real all-MiniLM-L6-v2, which was trained for exactly that.
# That model has no masked-LM or classification head, so for those we build small **seeded
# random** models of the bert-tiny shape in NumPy (`tutorial_setup.random_model`) and check
# the heads' math; their predictions are meaningless (random weights). With PyTorch installed,
# the same weights are loaded into transformers' models and the outputs compared. For real
# fill-mask predictions, convert a pretrained masked-LM checkpoint on a machine with internet
# access, e.g. `minibert convert prajjwal1/bert-tiny weights/bert-tiny.h5` (bert-tiny carries
# its pretraining heads), and load it with `minibert.load(path, head="masked-lm")`.
#
# Between the heads, the section "How BERT was pre-trained" works through the two
# pre-training objectives, masked language modelling and next-sentence prediction; you
# compute the masked-LM loss by hand in Exercise 2.
#
# Axis legend: `B` batch, `T` tokens, `H` hidden size, `V` vocabulary size, `N` masked tokens.

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
from minibert import heads
from minibert.tokenizer import Tokenizer

model = minibert.load(MODEL, backend="numpy")  # the readable NumPy reference (notebook 6: the Numba backend)
tokenizer = Tokenizer.from_file(MODEL)
print("heads in", MODEL.name, ":", model.heads or "none (encoder only)")

# %% [markdown]
# ## 1. Sentence similarity (the real model)
# all-MiniLM-L6-v2 was trained so that sentences with similar meaning get vectors pointing in
# similar directions. Its sentence vector is the **mean of the token vectors** of
# `last_hidden_state`, over the real tokens only (`[CLS]` and `[SEP]` included, padding left
# out), scaled to length 1: `v = sum_t m_t h_t / sum_t m_t`, then `v / |v|`, with `m` the
# attention mask. The cosine similarity of two unit vectors is their dot product.
# `minibert.heads.sentence_embeddings` computes it; you will write it yourself in Exercise 1.

# %%
sentences = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The cat sleeps on the sofa.",
    "A kitten is napping on the couch.",
    "Stock markets fell sharply today.",
]
batch = tokenizer.encode_batch(sentences)  # input_ids, token_type_ids, attention_mask: [B, T]
embeddings = heads.sentence_embeddings(model, batch)  # [B, H], each of length 1
similarity = embeddings @ embeddings.T  # [B, H] @ [H, B] -> [B, B]
print("sentence vectors", embeddings.shape, "lengths", np.linalg.norm(embeddings, axis=-1).round(6))

# %%
fig, ax = plt.subplots(figsize=(6.5, 5))
im = ax.imshow(similarity, cmap="viridis", vmin=0, vmax=1)
ax.set_xticks(range(len(sentences)), [s[:22] for s in sentences], rotation=60, ha="right")
ax.set_yticks(range(len(sentences)), [s[:22] for s in sentences])
for i in range(len(sentences)):
    for j in range(len(sentences)):
        ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
fig.colorbar(im)
ax.set_title("cosine similarity of sentence vectors")
plt.show()

# %% [markdown]
# The two pairs that mean the same thing with different words ("guitar"/"instrument",
# "cat sleeps on the sofa"/"kitten napping on the couch") are each other's nearest neighbours:

# %%
nearest = np.where(np.eye(len(sentences), dtype=bool), -1, similarity).argmax(-1)  # [B], ignoring itself
for i, j in enumerate(nearest):
    print(f"{sentences[i]:36s} -> {sentences[j]}")
assert list(nearest[:4]) == [1, 0, 3, 2]

# %% [markdown]
# ## 2. Fill-mask: the masked-LM head
# The masked-LM head turns a token's final vector into a score for each of the `V` vocabulary
# entries: dense `H -> H`, GELU, LayerNorm, then the **decoder**, which reuses (is *tied* to)
# the word-embedding table: score of token `v` = (transformed vector) · (embedding of `v`) +
# bias.
#
# Our seeded random `BertForMaskedLM` has the bert-tiny shape (2 layers, `H = 128`) and the
# same uncased vocabulary as our tokenizer.

# %%
mlm = tutorial_setup.random_model("bert-tiny", head="masked-lm", seed=0)
print(f"H={mlm.config.hidden_size}, L={mlm.config.num_hidden_layers}, heads: {mlm.bert.heads}")

text = "The capital of France is [MASK]."
enc = tokenizer.encode(text)
ids = np.array([enc["input_ids"]])  # [1, T]
at_mask = ids == tokenizer.mask_token_id  # [1, T] bool, True at [MASK]
w = mlm.weights

x = mlm.bert(ids).last_hidden_state[at_mask]  # [1, T, H] -> [N, H], N = 1 masked token
p = "cls.predictions."
h = x @ w[p + "transform.dense.weight"].T + w[p + "transform.dense.bias"]  # [N, H]
h = minibert.ops.gelu(h)  # [N, H]
h = minibert.ops.layer_norm(h, w[p + "transform.LayerNorm.weight"], w[p + "transform.LayerNorm.bias"], mlm.config.layer_norm_eps)  # [N, H]
logits = h @ w["embeddings.word_embeddings.weight"].T + w[p + "bias"]  # [N, H] @ [H, V] + [V] -> [N, V]
print("logits", logits.shape)
np.testing.assert_allclose(logits, mlm(ids, positions=at_mask).logits, rtol=1e-5, atol=1e-5)
print("our logits == minibert's masked-LM head")

# %% [markdown]
# The same weights in transformers' `BertForMaskedLM` (its names are ours with `bert.` in
# front of the encoder's; the decoder is tied to the word embeddings in both):

# %%
def torch_twin(hf_class, minibert_model, **config):  # -> transformers model holding the same weights
    import torch
    import transformers

    c = minibert_model.config
    hf = hf_class(transformers.BertConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size, **config)).eval()
    state = {(n if n.startswith(("cls.", "classifier.")) else "bert." + n): torch.from_numpy(a) for n, a in minibert_model.weights.items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert all("decoder" in n for n in missing), missing  # the decoder is tied to the word embeddings
    assert all("pooler" in n for n in unexpected), unexpected  # BertForMaskedLM has no pooler
    return hf


if tutorial_setup.have_torch("the masked-LM head against PyTorch's BertForMaskedLM"):
    import torch
    import transformers

    torch_mlm = torch_twin(transformers.BertForMaskedLM, mlm)
    with torch.inference_mode():
        torch_logits = torch_mlm(input_ids=torch.from_numpy(ids)).logits.numpy()[at_mask]  # [N, V]
    np.testing.assert_allclose(logits, torch_logits, rtol=0, atol=1e-5 * max(1, np.abs(torch_logits).max()))
    print("our logits == PyTorch's BertForMaskedLM")

# %% [markdown]
# Scores become probabilities with a softmax over the vocabulary. With random weights the
# "predictions" are arbitrary tokens, each with a probability within a small factor of `1 / V`:

# %%
for token, prob in heads.fill_mask(mlm, tokenizer, text, top_k=5)[0]:
    print(f"{token:15s} {prob:.6f}")
print(f"1 / V = {1 / mlm.config.vocab_size:.6f}")

# %% [markdown]
# ## How BERT was pre-trained
# BERT learned from unlabelled text (BooksCorpus and English Wikipedia) with two objectives
# at once (Devlin et al. 2019, section 3.1 and appendix A.1).
#
# ### Masked language modelling (MLM)
# BERT **selects 15% of the token positions** at random (never `[CLS]`/`[SEP]`) and must
# predict the original token at each selected position. Of the selected positions, **80%**
# are replaced by `[MASK]`, **10%** by a random token, and **10%** are left unchanged. Why not
# always `[MASK]`? `[MASK]` never appears when the model is used later, so the model must
# also produce good vectors for tokens that look normal; and since any token might be a
# replaced one, it must keep a contextual representation of every token. The paper's
# example, when "hairy" is selected in "my dog is hairy":
#
# * 80%: `my dog is [MASK]`
# * 10%: `my dog is apple` (a random token)
# * 10%: `my dog is hairy` (unchanged, but still predicted)
#
# (The original code draws the random token from the whole vocabulary; ours skips the
# special and unused ids 0 to 998.)

# %%
def mask_tokens(ids, rng, special_ids=(101, 102, 0)):  # [T] ids -> (masked ids [T], labels [T], -100 = not selected)
    ids = np.asarray(ids)
    candidates = ~np.isin(ids, special_ids)  # [T]
    selected = candidates & (rng.random(ids.shape) < 0.15)  # [T]: 15% of the positions
    labels = np.where(selected, ids, -100)  # [T]: predict the original token there, ignore the rest
    roll = rng.random(ids.shape)  # [T]
    masked = ids.copy()
    masked[selected & (roll < 0.8)] = tokenizer.mask_token_id  # 80% -> [MASK]
    random_pos = selected & (roll >= 0.8) & (roll < 0.9)  # 10% -> a random token
    masked[random_pos] = rng.integers(999, tokenizer.vocab_size, random_pos.sum())  # 999..V-1: skip special/unused ids
    return masked, labels  # the remaining 10% of the selected keep their token


rng = np.random.default_rng(0)
sentence = np.array(tokenizer.encode("my dog is hairy and my cat is not")["input_ids"])
for _ in range(3):
    masked, labels = mask_tokens(sentence, rng)
    print(tokenizer.convert_ids_to_tokens(masked), "labels at", np.flatnonzero(labels != -100))

# %% [markdown]
# Measured over 5,000 draws: the fraction of word positions selected, and what happens to
# the selected ones.

# %%
counts = np.zeros(4)  # not selected, [MASK], random token, unchanged
for _ in range(5000):
    masked, labels = mask_tokens(sentence, rng)
    words = ~np.isin(sentence, (101, 102, 0))
    selected = labels != -100
    counts += [(words & ~selected).sum(), (masked[selected] == tokenizer.mask_token_id).sum(),
               ((masked != sentence) & selected & (masked != tokenizer.mask_token_id)).sum(), (selected & (masked == sentence)).sum()]
selected_share = counts[1:].sum() / counts.sum()
outcome = counts[1:] / counts[1:].sum()
print(f"selected: {selected_share:.3f} of word positions; of those: [MASK] {outcome[0]:.3f}, random {outcome[1]:.3f}, unchanged {outcome[2]:.3f}")
assert abs(selected_share - 0.15) < 0.01 and np.allclose(outcome, [0.8, 0.1, 0.1], atol=0.02)

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].bar(["not selected", "selected"], [1 - selected_share, selected_share], color=["grey", "C0"])
axes[0].set(ylabel="fraction of word positions", title="15% of positions are selected")
axes[1].bar(["[MASK]", "random token", "unchanged"], outcome, color=["C0", "C1", "C2"])
axes[1].set(ylabel="fraction of selected positions", title="what a selected position becomes")
plt.show()

# %% [markdown]
# ### The masked-LM loss
# The loss is the **cross-entropy** at the selected positions only: minus the log of the
# probability the model gives to the original token, averaged over the selected positions
# (labels of -100 are ignored, as in PyTorch's `cross_entropy`):
#
# `loss = -(1/N) sum over selected t of log softmax(logits_t)[label_t]`
#
# A model that knows nothing spreads its probability evenly, `1 / V`, so its loss is
# `log V = log 30522 = 10.3`. You will compute it by hand in Exercise 2, on these inputs to our
# random model:

# %%
masked, labels = mask_tokens(sentence, np.random.default_rng(3))
logits_all = mlm(masked[None]).logits[0]  # [T, V]
print(f"{(labels != -100).sum()} selected positions: {tokenizer.convert_ids_to_tokens(masked)}; log V = {np.log(mlm.config.vocab_size):.3f}")

# %% [markdown]
# ### Next-sentence prediction (NSP)
# The second objective reads a pair `[CLS] A [SEP] B [SEP]` (notebook 1): half the time B
# is the sentence that follows A in the text (label *IsNext*), half the time a random
# sentence from another document (*NotNext*). A two-way classifier on the pooler's output
# (`[CLS]`, notebook 4) predicts the label. Later work (RoBERTa, Liu et al. 2019) found that
# dropping NSP does not hurt, and many later models train without it.

# %%
documents = [["The cat sat on the mat.", "It was tired after the long day.", "Soon it fell asleep."],
             ["Stock markets fell sharply today.", "Investors worried about interest rates."]]
rng = np.random.default_rng(1)
for _ in range(4):
    d = rng.integers(len(documents))
    i = rng.integers(len(documents[d]) - 1)
    if rng.random() < 0.5:
        a, b, label = documents[d][i], documents[d][i + 1], "IsNext"
    else:
        a, b, label = documents[d][i], documents[1 - d][rng.integers(len(documents[1 - d]))], "NotNext"
    pair = tokenizer.encode(a, b)
    print(f"{label:8s} {' '.join(tokenizer.convert_ids_to_tokens(pair['input_ids']))}")

# %% [markdown]
# ## 3. Classification: one linear layer on the pooler
# `BertForSequenceClassification` reads the pooler's vector (dense and tanh on `[CLS]`,
# notebook 4) and applies one linear layer `H -> number of labels`. Fine-tuned on a task such
# as natural-language inference, it answers whether a pair of sentences agree; ours, seeded
# and random, only shows the computation.

# %%
clf = tutorial_setup.random_model("bert-tiny", head="classification", seed=0)
print("labels:", clf.id2label)
pair = tokenizer.encode("A man is playing a guitar.", "Someone plays an instrument.")
ids, types = np.array([pair["input_ids"]]), np.array([pair["token_type_ids"]])  # [1, T] each
pooled = clf.bert(ids, token_type_ids=types).pooler_output  # [1, H]
scores = pooled @ clf.weights["classifier.weight"].T + clf.weights["classifier.bias"]  # [1, H] @ [H, 3] -> [1, 3]
probs = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()  # [1, 3]
np.testing.assert_allclose(scores, clf(ids, token_type_ids=types).logits, rtol=1e-5, atol=1e-6)
for (label, p_minibert), p in zip(heads.classify(clf, tokenizer, "A man is playing a guitar.", "Someone plays an instrument."), probs[0]):
    print(f"{label:14s} {p:.3f}")
    np.testing.assert_allclose(p, p_minibert, rtol=1e-5)

# %%
if tutorial_setup.have_torch("the classification head against PyTorch's BertForSequenceClassification"):
    torch_clf = torch_twin(transformers.BertForSequenceClassification, clf, num_labels=3)
    with torch.inference_mode():
        torch_scores = torch_clf(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types)).logits.numpy()
    np.testing.assert_allclose(scores, torch_scores, rtol=0, atol=1e-5)
    print("our scores == PyTorch's BertForSequenceClassification")

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py); both run without PyTorch.
#
# **Exercise 1. Sentence vectors, then search.** Write `embed_sentences(texts)` returning the
# `[N, H]` sentence vectors of all-MiniLM-L6-v2 for a list of texts, from the tokenizer and
# `model(...)`'s `last_hidden_state`, with the recipe of section 1 (not with `heads`). Think
# about the padding of a batch: which positions must not count, and what do you divide by?
# The check compares with `heads.sentence_embeddings` to 1e-5 on a padded batch of very
# different lengths; then `search` uses your vectors.

# %%
def embed_sentences(texts):  # list of str -> [N, H] unit vectors
    ### BEGIN SOLUTION
    enc = tokenizer.encode_batch(texts)
    out = model(enc["input_ids"], attention_mask=enc["attention_mask"])
    m = enc["attention_mask"][:, :, None].astype(np.float32)  # [N, T, 1], 0 on padding
    v = (out.last_hidden_state * m).sum(1) / m.sum(1)  # [N, H]: the mean over real tokens
    return v / np.linalg.norm(v, axis=-1, keepdims=True)  # [N, H]
    ### END SOLUTION


# %%
check.embed_sentences(embed_sentences)


def search(query, corpus):  # str, list of str -> list of int, most similar first
    v = embed_sentences([query] + corpus)  # [1 + C, H]
    return list(np.argsort(-(v[1:] @ v[0])))


corpus = ["How do I bake bread?", "Tips for training a puppy", "The recipe needs flour, yeast and water.", "Dogs learn tricks with treats."]
print([corpus[i] for i in search("teaching my young dog", corpus)])
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. The masked-LM loss.** Write `masked_lm_loss(logits, labels)`: from logits
# `[N, V]` and labels `[N]` (a token id, or -100 for "not selected"), return the mean
# cross-entropy over the selected positions, in nats. It must be exact for logits in the
# thousands too (a trained model's logits can be large), where `exp` overflows unless you
# shift each row first.

# %%
def masked_lm_loss(logits, labels):  # [N, V], [N] -> float
    ### BEGIN SOLUTION
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)  # [N, V]
    log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))  # [N, V]
    picked = labels != -100  # [N]
    return float(-log_probs[picked, labels[picked]].mean())
    ### END SOLUTION


# %%
check.masked_lm_loss(masked_lm_loss)
print(f"the loss of our random model: {masked_lm_loss(logits_all, labels):.3f} (log V = {np.log(mlm.config.vocab_size):.3f})")
print("Exercise 2 passed")
