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
# # 9. Fine-tuning: teaching BERT a sentence-pair task
#
# BERT is pre-trained once on a lot of text, then **fine-tuned**: a small head is put on top
# (here a classifier on the pooler, notebook 7) and *all* the weights are trained a little on
# a labelled task. The BERT paper does this for natural-language inference (NLI): given a pair
# `[CLS] A [SEP] B [SEP]`, does B follow from A?
#
# Our task has the same input format and needs no labels written by people: **does sentence B
# follow sentence A in the same document, or was it taken from another document?** The
# documents are real text that every Python installation has: the docstrings of the standard
# library. We fine-tune all-MiniLM-L6-v2's weights with minibert's own gradients (notebook 8)
# and its AdamW, and watch the loss, the accuracy and the attention change.
#
# This notebook keeps every run small so that it finishes in seconds (it runs in CI). The
# real runs (the whole model, thousands of pairs, against baselines and PyTorch) are in
# [`docs/training.md`](../docs/training.md), with the commands that produced them.
#
# Axis legend: `B` batch, `T` tokens, `H` hidden size, `A` heads, `L` layers.

# %% [markdown]
# ## Set-up
# The shared set-up (`tutorials/tutorial_setup.py`, notebook 1) puts this checkout's
# `minibert` first on the path and converts the model the first time.

# %%
import tutorial_setup  # tutorials/tutorial_setup.py: this checkout's minibert, the shared helpers
MODEL = tutorial_setup.default_model()  # weights/all-MiniLM-L6-v2.h5, converted the first time

# %%
import ast
import importlib.util
import sysconfig
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import exercise_checks as check  # the exercises' checks (tutorials/exercise_checks.py)
import minibert
from minibert import data, fit, heads, optim, train, weights

tokenizer = minibert.Tokenizer.from_file(MODEL)

# %% [markdown]
# ## 1. The task, from real text
# The training runs of `docs/training.md` build their corpus with
# `benchmarks/learning/stdlib_corpus.py`: each docstring of a standard-library module is a
# document, cut into sentences (paragraphs that look like code are dropped). We use its two
# functions on a dozen modules for training and five others for evaluation: splitting **by
# module** keeps any text out of both sides (a sentence seen in training cannot make the dev
# score look better than it is).
#
# Then `minibert.data.sentence_pairs` (the pretraining data's next-sentence pairs, BERT's
# recipe) draws pairs: A is a sentence that has a successor; with probability 1/2 B is that
# successor (label 0, "follows"), otherwise a random sentence of another document (label 1,
# "random").

# %%
assert tutorial_setup.ROOT is not None, "this notebook reads benchmarks/learning/stdlib_corpus.py: run it in a minibert checkout"
spec = importlib.util.spec_from_file_location(
    "stdlib_corpus", tutorial_setup.ROOT / "benchmarks" / "learning" / "stdlib_corpus.py")
stdlib_corpus = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stdlib_corpus)  # docstrings(tree), sentences(doc): the corpus recipe
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def documents(module_files):  # -> list of documents, each a list of sentences
    docs = []
    for name in module_files:
        tree = ast.parse((STDLIB / name).read_text(encoding="utf-8"))
        docs += [s for s in map(stdlib_corpus.sentences, stdlib_corpus.docstrings(tree)) if len(s) >= 2]
    return docs


TRAIN_MODULES = ["argparse.py", "typing.py", "pathlib.py", "subprocess.py", "tarfile.py", "zipfile.py",
                 "shutil.py", "logging/__init__.py", "threading.py", "ssl.py", "inspect.py", "pickle.py"]
DEV_MODULES = ["json/__init__.py", "csv.py", "random.py", "statistics.py", "calendar.py"]
train_docs, dev_docs = documents(TRAIN_MODULES), documents(DEV_MODULES)
LABELS = ["follows", "random"]  # label ids 0 and 1, as data.sentence_pairs numbers them
train_pairs = data.sentence_pairs(train_docs, np.random.default_rng(0), 400)  # [(A, B, label)]
dev_pairs = data.sentence_pairs(dev_docs, np.random.default_rng(1), 128)
print(f"train: {len(train_docs)} documents, {sum(map(len, train_docs))} sentences -> {len(train_pairs)} pairs")
print(f"dev:   {len(dev_docs)} documents, {sum(map(len, dev_docs))} sentences -> {len(dev_pairs)} pairs")
for a, b, label in train_pairs[:4]:
    print(f"\n[{LABELS[label]}]\n  A: {a}\n  B: {b}")

# %% [markdown]
# The model reads each pair as one sequence, `[CLS] A [SEP] B [SEP]` with token types 0 then 1
# (notebook 1), cut to 32 tokens here to keep the steps cheap (longest first: both sentences
# keep their beginning).

# %%
MAX_LENGTH = 32


def encode(pairs):  # [(A, B, label)] -> the keyword arguments of train.value_and_grad, [B, T] each
    enc = tokenizer.encode_batch([a for a, _, _ in pairs], [b for _, b, _ in pairs], max_length=MAX_LENGTH, truncation=True)
    enc["labels"] = np.array([label for _, _, label in pairs])  # [B]
    return enc


dev = encode(dev_pairs)
print(" ".join(tokenizer.convert_ids_to_tokens(dev["input_ids"][0])))
print("token types:", dev["token_type_ids"][0])

# %% [markdown]
# **Baselines.** What does a model have to beat? Always answering the more frequent label of
# the training set gives the *majority-class* accuracy. A one-line heuristic uses what makes
# the task possible at all: consecutive sentences of a docstring talk about the same thing,
# so they tend to share words. Predict "follows" when A and B share at least one word of four
# letters or more.

# %%
def shared_words(a, b):  # how many words of 4+ letters A and B have in common
    words = lambda s: {w for w in tokenizer.tokenize(s) if len(w) >= 4 and w.isalpha()}  # noqa: E731
    return len(words(a) & words(b))


majority = np.bincount([label for *_, label in train_pairs]).argmax()
dev_labels = dev["labels"]
baseline = {
    "majority class": float((dev_labels == majority).mean()),
    "shared word": float((np.array([0 if shared_words(a, b) else 1 for a, b, _ in dev_pairs]) == dev_labels).mean()),
}
for name, acc in baseline.items():
    print(f"{name:15s} dev accuracy {acc:.3f}")
assert baseline["shared word"] > baseline["majority class"]  # the text carries a signal a model can find

# %% [markdown]
# ## 2. The model: an encoder with a new classifier
# `fit.with_classification_head` puts a fresh classifier (`H -> 2`, weights drawn from
# N(0, 0.02), bias 0: transformers' initialisation) on the encoder. To keep the steps cheap,
# we keep only the **first 2 of MiniLM's 6 layers** (the real runs of `docs/training.md`
# fine-tune all six; with `L = 2` a step costs roughly a third of that). Dropout stays off
# (`rng=None`), so every run gives the same numbers.

# %%
encoder = weights.load(MODEL)
L = 2
config = minibert.BertConfig.from_dict({**encoder.config.to_dict(), "num_hidden_layers": L})
kept = {n: t for n, t in encoder.tensors.items() if not n.startswith("encoder.layer.") or int(n.split(".")[2]) < L}
initial = fit.with_classification_head(
    weights.WeightsFile(config=config, tensors=kept, vocab=encoder.vocab, do_lower_case=encoder.do_lower_case),
    LABELS, seed=0)


def classifier(weights_file):  # a WeightsFile -> a minibert classification model (its own copy of the weights)
    tensors = {name: t.copy() for name, t in weights_file.tensors.items()}  # AdamW updates them in place
    bert = minibert.BertModel(weights_file.config, tensors, heads=["classification"])
    return heads.HEAD_CLASSES["classification"](bert)


def evaluate(model, batch):  # -> (mean cross-entropy, accuracy) on a batch
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=batch["token_type_ids"]).logits.astype(np.float64)  # [B, 2]
    z = logits - logits.max(-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))  # [B, 2]
    return float(-log_probs[np.arange(len(logits)), batch["labels"]].mean()), float((logits.argmax(-1) == batch["labels"]).mean())


model = classifier(initial)
print(f"{model.config.num_hidden_layers} layers, H={model.config.hidden_size}, "
      f"{sum(w.size for w in model.weights.values()):,} parameters, labels {model.id2label}")
dev_before = evaluate(model, dev)
print(f"before training: dev loss {dev_before[0]:.4f} (log 2 = {np.log(2):.4f}), dev accuracy {dev_before[1]:.3f}")

# %% [markdown]
# The new classifier's weights are tiny, so its two logits are almost equal and every
# prediction is close to 50/50: the loss starts at `log 2`, whatever the pair.

# %% [markdown]
# ## 3. The training loop, by hand
# One step is four lines: the loss and the gradients (`train.value_and_grad`, notebook 8),
# clip the gradients' global norm to 1 (`optim.clip_grad_norm`), and let AdamW move every
# weight (`optim.AdamW.step`, equal to `torch.optim.AdamW`), at a learning rate that warms up
# linearly and then decays (`optim.linear_schedule_with_warmup`; step 1 runs at learning rate
# 0, as with transformers' schedule). This is the step of
# `minibert finetune` (`minibert.fit`).
#
# **First, a sanity check: overfit one batch.** Before a long run, check that the model can
# learn *something*: train on one batch of 16 pairs over and over. A correct loop drives that
# batch's loss towards 0; if it does not, something is broken (gradients, learning rate,
# labels), and no amount of data will help. (Karpathy's "Recipe for Training Neural
# Networks" starts this way.)
#
# AdamW moves each weight by about the learning rate per step whatever its gradient's size
# (exercise 1), so in a handful of steps BERT's usual `5e-5` would move nothing visibly; for
# this check we use `1e-3`.

# %%
batch = encode(train_pairs[:16])
STEPS, LR = 12, 1e-3
opt = optim.AdamW(model.weights, lr=LR, weight_decay=0.01)  # no decay on biases and LayerNorm weights
schedule = optim.linear_schedule_with_warmup(num_warmup_steps=2, num_training_steps=STEPS)
history = []  # per step: loss, accuracy on the batch, learning rate, gradient norm
for step in range(STEPS):
    acc = evaluate(model, batch)[1]  # before this step's update
    loss, grads = train.value_and_grad(model, **batch)  # rng=None: no dropout
    norm = optim.clip_grad_norm(grads, 1.0)  # the norm before clipping
    lr = LR * schedule(opt.step_count)
    opt.step(grads, lr=lr)
    history.append((loss, acc, lr, norm))
    print(f"step {step + 1:2d}  loss {loss:.4f}  batch accuracy {acc:.2f}  lr {lr:.1e}  |grad| {norm:.2f}")
final_loss, final_acc = evaluate(model, batch)
print(f"after {STEPS} steps: batch loss {final_loss:.4f}, batch accuracy {final_acc:.2f}")
assert final_loss < 0.2 and final_acc == 1.0, "the loop failed to overfit one batch"

# %%
h = np.array(history)  # [STEPS, 4]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
axes[0].plot(range(1, STEPS + 1), h[:, 0], "o-", label="training batch")
axes[0].axhline(np.log(2), color="grey", ls="--", lw=1, label="log 2 (a 50/50 guess)")
axes[0].set(xlabel="step", ylabel="cross-entropy loss (nats)", title="loss on the batch")
axes[0].legend(fontsize=8)
axes[1].plot(range(1, STEPS + 1), h[:, 1], "o-")
axes[1].set(xlabel="step", ylabel="accuracy on the batch", title="accuracy (before each step)", ylim=(0, 1.05))
lr_line = axes[2].plot(range(1, STEPS + 1), h[:, 2], "o-", label="learning rate")
axes[2].set(xlabel="step", ylabel="learning rate", title="warm-up, then linear decay")
ax2 = axes[2].twinx()
norm_line = ax2.plot(range(1, STEPS + 1), h[:, 3], "s--", color="C1", label="gradient norm")
ax2.set_ylabel("gradient norm (before clipping)")
axes[2].legend(handles=lr_line + norm_line, loc="upper right", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Did it learn the task? The dev set says no
# The batch is memorised. The question that matters is whether the model does better on
# pairs it has **never seen** (from other modules):

# %%
dev_after = evaluate(model, dev)
print(f"dev loss     {dev_before[0]:.4f} -> {dev_after[0]:.4f}")
print(f"dev accuracy {dev_before[1]:.3f} -> {dev_after[1]:.3f}  (shared-word baseline {baseline['shared word']:.3f})")
assert dev_after[0] > final_loss + 0.3  # far worse than on the memorised batch

# %% [markdown]
# Sixteen examples taught it sixteen answers, not the task: the training loss says nothing
# about generalisation; only held-out data does. Learning the task takes thousands of pairs
# and hundreds of steps at a small learning rate, with the dev loss watched as it goes:
#
# ```bash
# python benchmarks/learning/stdlib_corpus.py data/stdlib            # the whole corpus, ~8,000 training pairs
# minibert finetune weights/all-MiniLM-L6-v2.h5 --task pair-classification --labels follows,random \
#     --train data/stdlib/pairs_train.jsonl --dev data/stdlib/pairs_dev.jsonl --out runs/pairs \
#     --max-steps 200 --batch-size 16 --max-length 64 --lr 5e-5 --no-dropout   # ~45 min on 2 busy cores
# ```
#
# `docs/training.md` ("It really learns") reports what that reaches on the test split against
# the majority-class and bag-of-words baselines, and the same run in PyTorch side by side.

# %% [markdown]
# ## 5. What changed inside: attention
# Fine-tuning changes every weight a little; the attention patterns change with them. We
# compare the attention probabilities of the initial and the trained model on one pair of the
# batch, for every layer and head: the mean absolute change per head, then the `[CLS]` row
# (what the token the classifier reads looks at) of the head that changed most.

# %%
pair = {k: v[:1] for k, v in batch.items() if k != "labels"}  # the first pair of the batch, [1, T]
tokens = tokenizer.convert_ids_to_tokens(pair["input_ids"][0])
before = classifier(initial).bert(**pair, output_attentions=True).attentions  # L x [1, A, T, T]
after = model.bert(**pair, output_attentions=True).attentions
change = np.array([np.abs(a - b)[0].mean((-1, -2)) for a, b in zip(after, before)])  # [L, A]
layer, head = np.unravel_index(change.argmax(), change.shape)
print("mean |change| of the attention probabilities, per layer (rows) and head (columns):")
print(np.array2string(change, precision=4, suppress_small=True))
print(f"largest: layer {layer}, head {head}; the probabilities' mean is 1/T = {1 / len(tokens):.4f}")
print(f"layer {layer}, head {head}: [CLS] gives {before[layer][0, head, 0, 0]:.2f} of its attention to itself before, "
      f"{after[layer][0, head, 0, 0]:.2f} after; its top key after: {tokens[after[layer][0, head, 0].argmax()]!r}")
assert change[-1].mean() > change[0].mean()  # the last layer moved most
assert before[layer][0, head, 0, 0] > 0.5 > after[layer][0, head, 0, 0]  # the sink on [CLS] gave way

fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 2.2]})
im = axes[0].imshow(change, cmap="viridis", aspect="auto")
axes[0].set(xlabel="head", ylabel="layer", title="mean |attention change| per head",
            xticks=range(change.shape[1]), yticks=range(change.shape[0]))
fig.colorbar(im, ax=axes[0])
x = np.arange(len(tokens))
axes[1].bar(x - 0.2, before[layer][0, head, 0], 0.4, label="before")
axes[1].bar(x + 0.2, after[layer][0, head, 0], 0.4, label=f"after {STEPS} steps")
axes[1].set_xticks(x, tokens, rotation=70, fontsize=8)
axes[1].set(xlabel="key token", ylabel="attention probability",
            title=f"what [CLS] attends to, layer {layer} head {head}")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The memorising run changed the last layer most (the classifier's gradient reaches it
# first, and its output is what the pooler reads), and the `[CLS]` row of the head that
# changed most moved away from `[CLS]` itself (an attention sink before, notebook 3) onto a
# few words of the pair, as printed above. Such changes are easy to over-read (notebook 3: attention weights are not explanations): this model learned nothing
# general, yet its attention changed. Compare the same plot for a model fine-tuned for real
# (`runs/pairs/initial.h5` and `runs/pairs/model.h5` of the command above, loaded with
# `minibert.load(path, head="classification")`).

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell (between `### BEGIN SOLUTION` and `### END SOLUTION`:
# replace it with your own code) and a check cell that must pass. The checks are functions
# in [`exercise_checks.py`](exercise_checks.py); none needs PyTorch.
#
# **Exercise 1. Derive: AdamW's first step.** AdamW keeps two running averages per weight,
# `m = β₁ m + (1 - β₁) g` and `v = β₂ v + (1 - β₂) g²` (starting at 0), divides each by
# `1 - βᵗ` (the *bias correction*, `t` = step number), decays the weight
# (`θ = θ - lr λ θ`, "decoupled" from the gradient) and steps `θ = θ - lr m̂ / (sqrt(v̂) + ε)`.
# Work out what the first step does, then write `adamw_first_step(param, grad, lr,
# weight_decay)` returning the parameter after it (`β₁ = 0.9, β₂ = 0.999, ε = 1e-8`). Before
# you run the check: by how much does a weight whose gradient is `1e-3` move, and one whose
# gradient is `1e3`? Why is that the reason section 3 needed a larger learning rate?

# %%
def adamw_first_step(param, grad, lr, weight_decay):  # arrays of one shape, floats -> array
    ### BEGIN SOLUTION
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m_hat = (1 - beta1) * grad / (1 - beta1)  # = grad
    v_hat = (1 - beta2) * grad * grad / (1 - beta2)  # = grad^2
    decayed = param * (1 - lr * weight_decay)  # decoupled weight decay
    return decayed - lr * m_hat / (np.sqrt(v_hat) + eps)  # ~ param - lr * sign(grad)
    ### END SOLUTION


# %%
check.adamw_first_step(adamw_first_step)
print("Exercise 1 passed")

# %% [markdown]
# **Exercise 2. Derive: the loss to beat.** A classifier that ignores its input gives every
# example the same probabilities `q`. Which `q` minimises the mean cross-entropy on a set of
# labels, and what is that loss? Write `constant_loss(labels, num_labels)` returning it (in
# nats). Then compare with the dev loss before training above: why is a loss of `log 2` on
# our dev set not "knowing nothing" in general, and when is it?

# %%
def constant_loss(labels, num_labels):  # [N] ints, int -> float
    ### BEGIN SOLUTION
    q = np.bincount(labels, minlength=num_labels) / len(labels)  # the label frequencies are the best q
    q = q[q > 0]
    return float(-(q * np.log(q)).sum())  # the entropy of the labels, in nats
    ### END SOLUTION


# %%
check.constant_loss(constant_loss)
print(f"dev set: the best input-blind loss is {constant_loss(dev_labels, 2):.4f}; before training {dev_before[0]:.4f}")
print("Exercise 2 passed")

# %% [markdown]
# ## What you have seen
# * Fine-tuning is the training loop of notebook 8's gradients: `value_and_grad`, clip,
#   AdamW, with a warm-up and decay of the learning rate.
# * A model that can overfit one batch has a working loop; only held-out data shows whether it
#   learned the task.
# * Training changes attention, and a changed attention pattern is not, by itself, evidence of
#   what the model learned.
#
# More: `docs/training.md` (the optimiser and its parity with PyTorch, the commands, the
# measured runs), `minibert finetune --help`.
