"""Task heads on top of the BERT encoder: masked-LM, next-sentence, sequence classification.

Each head is the small network that transformers' ``BertFor*`` classes put on the encoder,
written in NumPy with the model's backend functions (``model.F.linear``, ``F.gelu``,
``F.layer_norm``), its steps named as transformers' modules and passed through ``tap``:

    masked-lm       (BertForMaskedLM, BertForPreTraining)            last_hidden_state -> logits [B, T, V]
        cls.predictions.transform.dense            [B, T, H] -> [B, T, H]
        cls.predictions.transform.transform_act_fn [B, T, H] -> [B, T, H]   (config.hidden_act, e.g. GELU)
        cls.predictions.transform.LayerNorm        [B, T, H] -> [B, T, H]
        cls.predictions                            [B, T, H] -> [B, T, V]   (the decoder, tied to the
                                                                             word embeddings, + bias)
    next-sentence   (BertForNextSentencePrediction, BertForPreTraining) pooler_output -> logits [B, 2]
        cls.seq_relationship                       [B, H] -> [B, 2]   (0 = B follows A, 1 = B is random)
    classification  (BertForSequenceClassification)                   pooler_output -> logits [B, N]
        classifier                                 [B, H] -> [B, N]   (N = num_labels, names in id2label)
    pretraining     (BertForPreTraining)   the masked-LM and next-sentence heads together, on a file
                                           holding both: logits [B, T, V] and seq_relationship_logits [B, 2]

The losses transformers computes when given labels are here too (``cross_entropy`` with -100
ignored, ``mse_loss`` for a single-label regression, ``bce_with_logits`` for float multi-labels),
each with its backward; ``model.loss(out, labels)`` applies the head's. ``minibert.train``
differentiates the whole model.

Dropout is the identity at inference, so it has no step here.

Build a head model with ``minibert.load(path, head="masked-lm")``. Calling it returns the
encoder's ``BertOutput`` with ``logits`` filled in, as transformers returns ``logits``.

Sentence embeddings need no head: ``mean_pooling`` and ``l2_normalize`` below turn the
encoder's output into the vectors sentence-transformers computes for all-MiniLM-L6-v2.
"""

import numpy as np

from . import ops
from .errors import HeadError, InputError
from .inputs import check_inputs
from .model import BertModel, BertOutput, no_tap
from .trace import Trace, capture

__all__ = [
    "HEAD_CLASSES", "HEAD_SOURCES", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
    "BertForSequenceClassification", "BertHeadModel", "check_head_available", "classify", "fill_mask", "l2_normalize",
    "mean_pooling", "sentence_embeddings",
    "IGNORE_INDEX", "bce_with_logits", "bce_with_logits_backward", "check_class_labels", "check_classification_labels",
    "classification_loss", "classification_loss_backward", "classification_problem", "cross_entropy",
    "cross_entropy_backward", "mse_loss", "mse_loss_backward",
]

# B = batch, T = sequence length, H = hidden size, V = vocabulary size, N = labels or chosen positions

# The heads a minibert .h5 file can hold, and the transformers classes whose checkpoints carry them.
HEAD_SOURCES = {
    "masked-lm": "BertForMaskedLM or BertForPreTraining",
    "next-sentence": "BertForNextSentencePrediction or BertForPreTraining",
    "classification": "BertForSequenceClassification",
    "pretraining": "BertForPreTraining (both the masked-lm and next-sentence heads)",
}
# A head made of other heads: the file must hold each part.
HEAD_PARTS = {"pretraining": ("masked-lm", "next-sentence")}


def check_head_available(head, heads_in_file, path):
    """Raise HeadError unless ``head`` is a known head that the file at ``path`` holds."""
    if head not in HEAD_SOURCES:
        hint = f"use one of {', '.join(HEAD_SOURCES)} (or head=None for the encoder)"
        raise HeadError(f"unknown head {head!r}", hint)
    if not all(part in heads_in_file for part in HEAD_PARTS.get(head, (head,))):
        held = ", ".join(heads_in_file) if heads_in_file else "none (encoder only)"
        raise HeadError(
            f"{path} holds no {head} head; the heads it holds: {held}",
            f"the file has no {head} head: convert a {HEAD_SOURCES[head]} checkpoint that has one "
            f"(`minibert convert DIR OUT.h5`); in Python, load this file with head=None or one of the heads it holds",
        )


# ---------------------------------------------------------------------------------------
# Sentence embeddings (no head: pooling of the encoder output)
# ---------------------------------------------------------------------------------------


def mean_pooling(last_hidden_state, attention_mask):  # [B, T, H], [B, T] -> [B, H]
    """Average of the token vectors of each row, padding left out (sentence-transformers' pooling)."""
    mask = attention_mask[:, :, None].astype(last_hidden_state.dtype)  # [B, T, 1]
    summed = (last_hidden_state * mask).sum(axis=1)  # [B, H]
    counts = np.maximum(mask.sum(axis=1), 1e-9)  # [B, 1], never 0 (as sentence-transformers clamps)
    return summed / counts  # [B, H]


def l2_normalize(x, eps=1e-12):  # [B, H] -> [B, H]
    """Scale each row to unit length, as ``torch.nn.functional.normalize(x, p=2, dim=1)``."""
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))  # [B, 1]
    return x / np.maximum(norm, eps)  # [B, H]


def sentence_embeddings(model, encoding, pooling="mean"):  # {"input_ids": [B, T], ...} -> [B, H]
    """L2-normalised sentence vectors of a tokenized batch (works on any encoder).

    ``pooling="mean"``: the average of the token vectors (sentence-transformers' pooling for
    all-MiniLM-L6-v2); ``"cls"``: the [CLS] token's vector.
    """
    bert = getattr(model, "bert", model)  # a head model's encoder, or the encoder itself
    out = bert(encoding["input_ids"], encoding["attention_mask"], encoding.get("token_type_ids"))
    if pooling == "cls":
        return l2_normalize(out.last_hidden_state[:, 0])  # [B, H]
    return l2_normalize(mean_pooling(out.last_hidden_state, np.asarray(encoding["attention_mask"])))  # [B, H]


# ---------------------------------------------------------------------------------------
# Losses, as transformers computes them from the logits, and their backward
# ---------------------------------------------------------------------------------------

IGNORE_INDEX = -100  # a label that takes no part in the loss (torch's CrossEntropyLoss default)


def check_class_labels(labels, shape, num_classes, name="labels"):  # -> int64 array of `shape`
    """Integer class labels of the expected shape, each in [0, num_classes) or IGNORE_INDEX."""
    a = np.asarray(labels)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name} has dtype {a.dtype}, expected integer class ids", f"pass {name} as an int64 array")
    if a.shape != tuple(shape):
        per = "token" if len(shape) == 2 else "sequence"
        raise InputError(f"{name} has shape {a.shape}, expected {tuple(shape)}", f"give one label per {per}")
    bad = (a != IGNORE_INDEX) & ((a < 0) | (a >= num_classes))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{name}[{', '.join(map(str, where))}] = {a[where]} is not a class id in [0, {num_classes}) "
            f"nor {IGNORE_INDEX} (ignored)",
            f"use class ids 0..{num_classes - 1}, or {IGNORE_INDEX} where a position takes no part in the loss",
        )
    if (a == IGNORE_INDEX).all():
        raise InputError(f"every entry of {name} is {IGNORE_INDEX}: there is nothing to compute a loss on",
                         "label at least one position (transformers would return NaN)")
    return a.astype(np.int64, copy=False)


def cross_entropy(logits, labels):  # [N, C], [N] ints -> scalar
    """Mean of -log softmax(logits)[label] over the rows whose label is not -100, as
    ``torch.nn.CrossEntropyLoss()`` (in the dtype of the logits)."""
    keep = labels != IGNORE_INDEX  # [N]
    z = logits[keep]  # [n, C]
    z = z - z.max(-1, keepdims=True)  # [n, C], the log-softmax is unchanged by a shift
    log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))  # [n, C]
    return -log_probs[np.arange(len(z)), labels[keep]].mean()


def cross_entropy_backward(logits, labels):  # [N, C], [N] ints -> [N, C]
    """d loss / d logits = (softmax(logits) - onehot(label)) / n on the n kept rows, 0 on ignored ones."""
    keep = labels != IGNORE_INDEX  # [N]
    n = int(keep.sum())
    dlogits = np.zeros_like(logits)  # [N, C]
    probs = ops.softmax(logits[keep])  # [n, C]
    probs[np.arange(n), labels[keep]] -= 1.0
    dlogits[keep] = probs / logits.dtype.type(n)
    return dlogits


def mse_loss(predictions, targets):  # [N], [N] -> scalar
    """Mean squared error, as ``torch.nn.MSELoss()`` (transformers' regression, num_labels == 1)."""
    return ((predictions - targets) ** 2).mean()


def mse_loss_backward(predictions, targets):  # [N], [N] -> [N]
    """d mean((p - t)^2) / d p = 2 (p - t) / N."""
    return 2.0 * (predictions - targets) / predictions.dtype.type(predictions.size)


def bce_with_logits(logits, targets):  # [N, C], [N, C] -> scalar
    """Binary cross-entropy of sigmoid(logits), mean over every entry, as ``BCEWithLogitsLoss()``
    (transformers' multi-label classification). Written max(z, 0) - z t + log(1 + exp(-|z|)),
    which never overflows."""
    return (np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))).mean()


def bce_with_logits_backward(logits, targets):  # [N, C], [N, C] -> [N, C]
    """d loss / d z = (sigmoid(z) - t) / (N C)."""
    return (1.0 / (1.0 + np.exp(-logits)) - targets) / logits.dtype.type(logits.size)


def classification_problem(num_labels, labels):
    """transformers' ``problem_type`` for BertForSequenceClassification, from the labels given:
    "regression" when num_labels == 1, "single_label_classification" for integer labels,
    "multi_label_classification" for float labels."""
    if num_labels == 1:
        return "regression"
    if np.issubdtype(np.asarray(labels).dtype, np.integer):
        return "single_label_classification"
    return "multi_label_classification"


def check_classification_labels(labels, batch_size, num_labels, dtype):  # -> (problem, labels)
    """The labels of a classification batch, checked and converted for the problem type."""
    problem = classification_problem(num_labels, labels)
    a = np.asarray(labels)
    if problem == "single_label_classification":
        return problem, check_class_labels(a, (batch_size,), num_labels)
    if not np.issubdtype(a.dtype, np.number) or a.dtype == bool:
        raise InputError(f"labels has dtype {a.dtype}, expected numbers", "pass labels as a float array")
    expected = (batch_size,) if problem == "regression" else (batch_size, num_labels)
    if a.size != int(np.prod(expected)) or (problem != "regression" and a.shape != expected):
        hint = "one float target per sequence (num_labels == 1: regression)" if problem == "regression" else \
            "one 0/1 float per label and sequence (float labels: multi-label), or integer class ids"
        raise InputError(f"labels has shape {a.shape}, expected {expected}", f"pass {hint}")
    return problem, a.reshape(expected).astype(dtype)


def classification_loss(problem, logits, labels):  # [B, N], labels -> scalar
    """transformers' loss for BertForSequenceClassification's ``problem_type``."""
    if problem == "regression":
        return mse_loss(logits.reshape(-1), labels)  # [B], [B]
    if problem == "single_label_classification":
        return cross_entropy(logits, labels)
    return bce_with_logits(logits, labels)


def classification_loss_backward(problem, logits, labels):  # [B, N], labels -> [B, N]
    if problem == "regression":
        return mse_loss_backward(logits.reshape(-1), labels).reshape(logits.shape)  # [B, 1]
    if problem == "single_label_classification":
        return cross_entropy_backward(logits, labels)
    return bce_with_logits_backward(logits, labels)


# ---------------------------------------------------------------------------------------
# The head models
# ---------------------------------------------------------------------------------------


class BertHeadModel:
    """An encoder (``self.bert``, a ``BertModel``) with one task head on top.

    ``model(input_ids, ...)`` checks the inputs, then runs ``forward``: the encoder's forward
    pass, then the head's steps.
    """

    head = None  # "masked-lm", "next-sentence", "classification" or "pretraining"

    def __init__(self, bert: BertModel):
        self.bert = bert

    # The encoder's settings, read through so the head steps use the same ones.
    config = property(lambda self: self.bert.config)
    dtype = property(lambda self: self.bert.dtype)
    backend = property(lambda self: self.bert.backend)
    F = property(lambda self: self.bert.F)
    weights = property(lambda self: self.bert.weights)
    path = property(lambda self: self.bert.path)

    @property
    def use_fast_path(self):
        """The encoder's switch (``BertModel.use_fast_path``), read and set through the head model."""
        return self.bert.use_fast_path

    @use_fast_path.setter
    def use_fast_path(self, value):
        self.bert.use_fast_path = value

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *args, **kwargs) -> BertOutput:
        """Check the inputs (``inputs.check_inputs``), run ``forward`` (its other arguments as given)."""
        input_ids, attention_mask, token_type_ids = check_inputs(self.config, input_ids, attention_mask, token_type_ids)
        return self.forward(input_ids, attention_mask, token_type_ids, *args, **kwargs)

    def trace(self, input_ids, attention_mask=None, token_type_ids=None, only=None, patch=None) -> Trace:
        """``BertModel.trace`` through encoder and head: the head's steps are recorded too."""
        return capture(self, input_ids, attention_mask, token_type_ids, only=only, patch=patch)


class BertForMaskedLM(BertHeadModel):
    """Masked language modelling: a score for every vocabulary token at each position.

    ``model(ids, mask)`` gives ``out.logits`` [B, T, V]. The full logits are large
    (V = 30522 floats per token); ``positions`` picks some tokens only::

        out = model(ids, mask, positions=ids == tokenizer.mask_token_id)   # out.logits [N, V]

    ``positions`` is a [B, T] boolean array; the N rows of ``logits`` are its True entries in
    row-major order (the order of ``np.argwhere(positions)``).
    """

    head = "masked-lm"

    def __init__(self, bert):
        super().__init__(bert)
        w = self.weights
        # The decoder's weight is the word-embedding table (tied, as in BERT's pretraining), and
        # its bias is cls.predictions.bias, unless the checkpoint stored different (untied) ones.
        self.decoder_weight = w.get("cls.predictions.decoder.weight", w["embeddings.word_embeddings.weight"])  # [V, H]
        self.decoder_bias = w.get("cls.predictions.decoder.bias", w["cls.predictions.bias"])  # [V]

    def forward(self, input_ids, attention_mask, token_type_ids, positions=None,
                output_hidden_states=False, output_attentions=False, tap=no_tap) -> BertOutput:
        out = self.bert.forward(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions, tap)
        x = out.last_hidden_state  # [B, T, H]
        if positions is not None:
            x = x[self.check_positions(positions, x.shape[:2])]  # [N, H]
        out.logits = self.predictions(x, tap)  # [B, T, V], or [N, V]
        return out

    def loss(self, out, labels):  # full logits [B, T, V], labels [B, T] -> float
        """transformers' masked-LM loss: cross-entropy over the tokens whose label is not -100."""
        V = self.config.vocab_size
        labels = check_class_labels(labels, out.logits.shape[:-1], V)
        return float(cross_entropy(out.logits.reshape(-1, V), labels.reshape(-1)))

    def predictions(self, x, tap=no_tap):  # [..., H] -> [..., V]
        """transformers' ``BertLMPredictionHead``: transform (dense, hidden_act, LayerNorm), then decode."""
        F, w, eps = self.F, self.weights, self.config.layer_norm_eps
        p = "cls.predictions.transform."
        h = tap(p + "dense", F.linear(x, w[p + "dense.weight"], w[p + "dense.bias"]))  # [..., H]
        act = getattr(F, self.config.hidden_act)  # the function named by config.hidden_act, e.g. F.gelu
        h = tap(p + "transform_act_fn", act(h))  # [..., H]
        h = tap(p + "LayerNorm", F.layer_norm(h, w[p + "LayerNorm.weight"], w[p + "LayerNorm.bias"], eps))  # [..., H]
        logits = F.linear(h, self.decoder_weight, self.decoder_bias)  # [..., H] @ [H, V] -> [..., V]
        return tap("cls.predictions", logits)  # [..., V]

    @staticmethod
    def check_positions(positions, shape):  # [B, T] bool -> [B, T] bool
        given = np.asarray(positions)
        positions = given[None, :] if given.ndim == 1 else given  # one sequence: a batch of one
        if positions.dtype != bool or positions.shape != tuple(shape):
            raise InputError(
                f"positions has dtype {given.dtype} and shape {given.shape}, "
                f"expected a bool array of shape {tuple(shape)}",
                "pass a [batch, seq_len] boolean array, e.g. positions=input_ids == tokenizer.mask_token_id",
            )
        return positions


class BertForNextSentencePrediction(BertHeadModel):
    """Next-sentence prediction: does text B follow text A? ``out.logits`` [B, 2].

    Class 0 means "B is the continuation of A", class 1 "B is a random sentence".
    """

    head = "next-sentence"

    def forward(self, input_ids, attention_mask, token_type_ids,
                output_hidden_states=False, output_attentions=False, tap=no_tap) -> BertOutput:
        out = self.bert.forward(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions, tap)
        w = self.weights
        out.logits = tap("cls.seq_relationship", self.F.linear(  # [B, H] -> [B, 2]
            out.pooler_output, w["cls.seq_relationship.weight"], w["cls.seq_relationship.bias"]))
        return out

    def loss(self, out, labels):  # logits [B, 2], labels [B] -> float
        """transformers' next-sentence loss: cross-entropy over the two classes."""
        return float(cross_entropy(out.logits, check_class_labels(labels, out.logits.shape[:1], 2)))


class BertForSequenceClassification(BertHeadModel):
    """Sequence classification: one score per label for each text or pair. ``out.logits`` [B, N].

    ``model.id2label`` names the labels, e.g. {0: "entailment", 1: "neutral", 2: "contradiction"}.
    """

    head = "classification"

    @property
    def id2label(self):
        return self.config.id2label

    def forward(self, input_ids, attention_mask, token_type_ids,
                output_hidden_states=False, output_attentions=False, tap=no_tap) -> BertOutput:
        out = self.bert.forward(input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions, tap)
        w = self.weights
        out.logits = tap("classifier", self.F.linear(  # [B, H] -> [B, N]
            out.pooler_output, w["classifier.weight"], w["classifier.bias"]))
        return out

    def loss(self, out, labels):  # logits [B, N], labels -> float
        """transformers' loss: cross-entropy for integer labels, MSE when num_labels == 1,
        binary cross-entropy for float multi-labels (see ``classification_problem``)."""
        B, N = out.logits.shape
        problem, labels = check_classification_labels(labels, B, N, out.logits.dtype)
        return float(classification_loss(problem, out.logits, labels))


class BertForPreTraining(BertForMaskedLM):
    """BERT's pretraining heads together: masked-LM ``out.logits`` [B, T, V] (or [N, V] with
    ``positions``) and next-sentence ``out.seq_relationship_logits`` [B, 2], on a file holding
    both heads (a converted BertForPreTraining checkpoint). The loss is their sum."""

    head = "pretraining"

    def forward(self, input_ids, attention_mask, token_type_ids, positions=None,
                output_hidden_states=False, output_attentions=False, tap=no_tap) -> BertOutput:
        out = super().forward(input_ids, attention_mask, token_type_ids, positions,
                              output_hidden_states, output_attentions, tap)
        w = self.weights
        out.seq_relationship_logits = tap("cls.seq_relationship", self.F.linear(  # [B, H] -> [B, 2]
            out.pooler_output, w["cls.seq_relationship.weight"], w["cls.seq_relationship.bias"]))
        return out

    def loss(self, out, labels, next_sentence_label):  # -> float
        """transformers' BertForPreTraining loss: masked-LM loss + next-sentence loss."""
        logits = out.seq_relationship_logits  # [B, 2]
        nsp = cross_entropy(logits, check_class_labels(next_sentence_label, logits.shape[:1], 2, "next_sentence_label"))
        return super().loss(out, labels) + float(nsp)


HEAD_CLASSES = {
    "masked-lm": BertForMaskedLM,
    "next-sentence": BertForNextSentencePrediction,
    "classification": BertForSequenceClassification,
    "pretraining": BertForPreTraining,
}


# ---------------------------------------------------------------------------------------
# Text in, answers out (what the command line prints)
# ---------------------------------------------------------------------------------------


def fill_mask(model, tokenizer, text, top_k=5, truncation=False):
    """The ``top_k`` most likely tokens for every [MASK] in ``text``, with their probabilities.

    Returns one list per [MASK], left to right, of (token, probability), most likely first.
    ``truncation=True`` cuts a text longer than the model's positions (default: an InputError).
    """
    if top_k < 1:
        raise InputError(f"top_k={top_k} must be at least 1", "ask for --top-k 1 or more")
    max_length = model.config.max_position_embeddings if truncation else None
    enc = tokenizer.encode(text, max_length=max_length, truncation=truncation)
    ids = np.array([enc["input_ids"]], dtype=np.int64)  # [1, T]
    positions = ids == tokenizer.mask_token_id  # [1, T]
    if not positions.any():
        raise InputError(
            f"the text has no [MASK] token: {text!r}",
            "write [MASK] (upper case, with brackets) where a word should be predicted",
        )
    out = model(ids, np.array([enc["attention_mask"]]), np.array([enc["token_type_ids"]]), positions=positions)
    probs = ops.softmax(out.logits.astype(np.float64))  # [N, V]
    k = min(top_k, probs.shape[-1])
    answers = []
    for row in probs:  # [V]
        best = np.argsort(-row, kind="stable")[:k]  # [k]
        answers.append([(tokenizer.convert_ids_to_tokens(int(i)), float(row[i])) for i in best])
    return answers


def predict_each_position(model, tokenizer, text, batch_size=32):
    """Mask each token of ``text`` alone, in turn, and predict it from all the others.

    Returns (tokens, predicted): the text's tokens ([CLS]/[SEP] left out) and, for each, the
    most likely token (argmax over the whole vocabulary) when that one position is [MASK].
    Each masked copy of the text is one row of a batch of ``batch_size`` rows.
    """
    enc = tokenizer.encode(text)
    ids = np.array(enc["input_ids"], dtype=np.int64)  # [T]
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    positions = [t for t in range(len(ids)) if ids[t] not in special]  # the N tokens to predict
    predicted = []
    for start in range(0, len(positions), batch_size):
        chunk = positions[start:start + batch_size]
        rows = np.arange(len(chunk))
        batch = np.repeat(ids[None, :], len(chunk), axis=0)  # [n, T]: one copy of the text per masked position
        batch[rows, chunk] = tokenizer.mask_token_id
        where = np.zeros(batch.shape, dtype=bool)  # [n, T]
        where[rows, chunk] = True
        logits = model(batch, positions=where).logits  # [n, V]
        predicted += logits.argmax(-1).tolist()
    return tokenizer.convert_ids_to_tokens(ids[positions].tolist()), tokenizer.convert_ids_to_tokens(predicted)


def classify(model, tokenizer, text, text_pair=None, truncation=False):
    """Probability of every label for ``text`` (or the pair), as (label name, probability).

    Softmax over the labels; with a single label, the sigmoid of its logit (as transformers'
    text-classification pipeline does). ``truncation=True`` cuts a text longer than the model's positions.
    """
    enc = tokenizer.encode(
        text, text_pair, max_length=model.config.max_position_embeddings if truncation else None, truncation=truncation
    )
    out = model(np.array([enc["input_ids"]]), np.array([enc["attention_mask"]]), np.array([enc["token_type_ids"]]))
    logits = out.logits.astype(np.float64)[0]  # [N]
    probs = 1.0 / (1.0 + np.exp(-logits)) if logits.shape[0] == 1 else ops.softmax(logits)  # [N]
    id2label = model.config.id2label
    return [(id2label.get(i, f"LABEL_{i}"), float(p)) for i, p in enumerate(probs)]
