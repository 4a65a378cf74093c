"""Gradients by hand: the loss of a head model and d loss / d every parameter, in NumPy.

    import minibert
    from minibert import train
    model = minibert.load("tiny.h5", head="classification", dtype="float64")
    loss, grads = train.value_and_grad(model, input_ids, attention_mask=mask, labels=labels)

``value_and_grad`` runs the forward pass of ``model.py`` and ``heads.py`` again, through the
same backend functions (``model.F``), so every value equals the inference path's, keeping
only what the backward pass needs (the cache); then the backward pass runs the same steps in
reverse, each with its ``*_backward`` twin from ``ops.py``. Read ``layer_forward`` and
``layer_backward`` side by side: the backward is the forward read from the bottom up.

``grads`` has one entry per trainable parameter of the model (the names of transformers'
``named_parameters()`` without the ``bert.`` prefix, as in the .h5 file), of the weight's shape
and dtype. The masked-LM decoder is tied to the word embeddings: its gradient is added to
``embeddings.word_embeddings.weight``, listed once. Like ``torch.nn.Embedding(padding_idx=
pad_token_id)``, the word-embedding row of [PAD] gets no gradient from the lookup.

Dropout (``hidden_dropout_prob``, ``attention_probs_dropout_prob``, ``classifier_dropout``) is
applied where transformers applies it, only when ``rng`` is a ``numpy.random.Generator``;
without one the pass is deterministic and equals PyTorch's in ``eval()`` mode.

``trace_grads`` records, in backward order, d loss / d value at every named step of the
forward pass (the names of ``minibert.trace.hook_points``, plus the head's steps) and
d loss / d parameter under each parameter's name: a ``Trace`` that ``minibert.compare`` lines
up with ``minibert.reference.trace_grads`` (PyTorch autograd) to name the first step where a
backward pass goes wrong.

Axes: B batch, T sequence, H hidden, A heads, D = H // A, I intermediate, V vocabulary,
N labels (or, in the masked-LM head, the labelled positions).
"""

import numpy as np

from . import heads as H
from .errors import InputError
from .inputs import check_inputs
from .trace import Trace, matches

# ---------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------


def value_and_grad(model, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                   next_sentence_label=None, rng=None):
    """The loss of a head model on a batch (a float, transformers' ``outputs.loss``) and its
    gradient: {parameter name: array of the parameter's shape and dtype}.

    Labels as transformers: classification [B] ints (floats when num_labels == 1: regression;
    [B, N] floats: multi-label); masked-lm [B, T] with -100 = ignored; next-sentence [B]
    (0 = B follows A); pretraining ``labels`` [B, T] and ``next_sentence_label`` [B].
    ``rng``: None for no dropout, or a ``numpy.random.Generator`` to apply the config's dropout.
    """
    loss, cache = forward(model, input_ids, attention_mask, token_type_ids, labels, next_sentence_label, rng)
    grads = backward(model, cache)
    return loss, grads


def trace_grads(model, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None, rng=None, only=None):
    """A ``Trace`` of d loss / d value at every named step and d loss / d parameter, in backward
    order. ``only``: glob patterns of the names to keep. ``trace.meta`` holds the ``loss`` and the
    ``labels`` (and ``next_sentence_label``), as lists."""
    patterns = None if only is None else [only] if isinstance(only, str) else list(only)
    values = {}

    def record(name, grad):
        if patterns is None or matches(name, patterns):
            values[name] = grad

    loss, cache = forward(model, input_ids, attention_mask, token_type_ids, labels, next_sentence_label, rng)
    backward(model, cache, tap=record)
    inputs = dict(zip(("input_ids", "attention_mask", "token_type_ids"), cache["inputs"]))
    given = {"labels": labels, "next_sentence_label": next_sentence_label}
    targets = {name: np.asarray(v).tolist() for name, v in given.items() if v is not None}  # JSON: saved in meta
    meta = {
        "producer": "minibert (backward by hand)",
        "kind": "gradients",
        "head": model.head,
        "loss": loss,
        **targets,
        "backend": model.backend,
        "dtype": str(model.dtype),
        "model_file": str(getattr(model, "path", "")),
        "source_file": __file__,
        "patched": [],
        "inputs": inputs,
    }
    return Trace(values, meta)


def no_tap(name, grad):
    """The backward tap when nothing is recorded."""


# ---------------------------------------------------------------------------------------
# Forward with a cache, backward from it
# ---------------------------------------------------------------------------------------


def forward(model, input_ids, attention_mask, token_type_ids, labels, next_sentence_label, rng):
    """The loss (a float) and the cache: per part of the model, the arrays its backward needs."""
    head = getattr(model, "head", None)
    if head not in HEAD_STEPS:
        raise InputError(
            "value_and_grad needs a model with a task head (an encoder alone has no loss)",
            'load it with a head: minibert.load(path, head="classification"), "masked-lm", "next-sentence" '
            'or "pretraining"',
        )
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise InputError(f"rng is a {type(rng).__name__}, expected a numpy.random.Generator or None",
                         "pass rng=np.random.default_rng(seed) for dropout, or rng=None for none")
    ids, mask, types = check_inputs(model.config, input_ids, attention_mask, token_type_ids)
    targets = check_labels(model, ids.shape, labels, next_sentence_label)
    cache = {"inputs": (ids, mask, types), "layers": []}
    x, cache["embeddings"] = embeddings_forward(model, ids, types, rng)  # [B, T, H]
    mask_bias = model.F.attention_mask_bias(mask, model.dtype)  # [B, 1, 1, T]
    for i in range(model.config.num_hidden_layers):
        x, saved = layer_forward(model, i, x, mask_bias, rng)  # [B, T, H]
        cache["layers"].append(saved)
    head_forward, _ = HEAD_STEPS[head]
    loss, cache["head"] = head_forward(model, x, targets, rng)
    return float(loss), cache


def backward(model, cache, tap=no_tap):
    """d loss / d every parameter, from the cache of ``forward``; ``tap(name, grad)`` sees each
    gradient as it is computed."""
    grads = {}
    _, head_backward = HEAD_STEPS[model.head]
    dx = head_backward(model, cache["head"], grads, tap)  # [B, T, H], d loss / d last hidden state
    for i in reversed(range(model.config.num_hidden_layers)):
        dx = layer_backward(model, i, dx, cache["layers"][i], grads, tap)  # [B, T, H]
    embeddings_backward(model, dx, cache["embeddings"], grads, tap)
    return {name: grads[name] for name in model.weights if name in grads}  # in the file's order


# ---------------------------------------------------------------------------------------
# One named step each, and its backward: dense layer, LayerNorm, residual + LayerNorm, lookup
# ---------------------------------------------------------------------------------------


def dense(model, name, x):  # [..., in] -> [..., out], the nn.Linear called `name`
    w = model.weights
    return model.F.linear(x, w[name + ".weight"], w[name + ".bias"])


def dense_backward(model, name, dy, x, grads, tap):  # [..., out], [..., in] -> [..., in]
    dx, dweight, dbias = model.F.linear_backward(dy, x, model.weights[name + ".weight"])  # dW [out, in]
    add_grad(grads, tap, name + ".weight", dweight)
    add_grad(grads, tap, name + ".bias", dbias)
    return dx


def norm(model, name, x):  # [..., H] -> [..., H], the nn.LayerNorm called `name`
    w = model.weights
    return model.F.layer_norm(x, w[name + ".weight"], w[name + ".bias"], model.config.layer_norm_eps)


def norm_backward(model, name, dy, x, grads, tap):  # [..., H], [..., H] -> [..., H]
    F, eps = model.F, model.config.layer_norm_eps
    dx, dweight, dbias = F.layer_norm_backward(dy, x, model.weights[name + ".weight"], eps)  # [..., H], [H], [H]
    add_grad(grads, tap, name + ".weight", dweight)
    add_grad(grads, tap, name + ".bias", dbias)
    return dx


def add_norm(model, name, h, x):  # [..., H], [..., H] -> [..., H]: LayerNorm `name` of h + x
    w = model.weights
    return model.F.add_layer_norm(h, x, w[name + ".weight"], w[name + ".bias"], model.config.layer_norm_eps)


def add_norm_backward(model, name, dy, h, x, grads, tap):  # -> dh, dx, each [..., H]
    F, eps = model.F, model.config.layer_norm_eps
    dh, dx, dweight, dbias = F.add_layer_norm_backward(dy, h, x, model.weights[name + ".weight"], eps)
    add_grad(grads, tap, name + ".weight", dweight)
    add_grad(grads, tap, name + ".bias", dbias)
    return dh, dx


def lookup_backward(model, name, dy, ids, grads, tap, padding_idx=None):  # the nn.Embedding `name`
    table = model.weights[name + ".weight"]  # [N, H]
    dtable = model.F.embedding_backward(dy, ids, table.shape[0], padding_idx)  # [N, H]
    add_grad(grads, tap, name + ".weight", dtable)


def add_grad(grads, tap, name, grad, final=True):
    """Add one contribution to a parameter's gradient; ``final``: it is complete, tap it."""
    grads[name] = grads[name] + grad if name in grads else grad
    if final:
        tap(name, grads[name])


def dropout(model, x, p, rng):  # [...] -> [...], mask (None when no dropout is applied)
    if rng is None or p == 0:
        return x, None
    mask = model.F.dropout_mask(rng, x.shape, p, x.dtype)  # [...]
    return model.F.dropout(x, mask), mask


def dropout_backward(model, dy, mask):  # [...] -> [...]
    return dy if mask is None else model.F.dropout_backward(dy, mask)


def activation(model):
    """The activation named by config.hidden_act (a backend function), and its backward."""
    act = getattr(model.F, model.config.hidden_act)  # e.g. F.gelu
    return act, getattr(model.F, act.__name__ + "_backward")  # e.g. F.gelu_backward(dy, x)


# ---------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------


def embeddings_forward(model, ids, types, rng):  # [B, T] ints -> [B, T, H], saved
    F, w, cfg = model.F, model.weights, model.config
    words = F.embedding(ids, w["embeddings.word_embeddings.weight"])  # [B, T, H]
    token_types = F.embedding(types, w["embeddings.token_type_embeddings.weight"])  # [B, T, H]
    positions = F.embedding(F.position_ids(ids.shape[1]), w["embeddings.position_embeddings.weight"])  # [1, T, H]
    x = words + token_types + positions  # [B, T, H], embeddings.sum
    y = norm(model, "embeddings.LayerNorm", x)  # [B, T, H]
    y, mask = dropout(model, y, cfg.hidden_dropout_prob, rng)  # [B, T, H]
    return y, dict(ids=ids, types=types, sum=x, mask=mask)


def embeddings_backward(model, dy, s, grads, tap):  # [B, T, H] -> (parameter gradients only)
    F, cfg = model.F, model.config
    dy = dropout_backward(model, dy, s["mask"])  # [B, T, H]
    tap("embeddings.LayerNorm", dy)
    dx = norm_backward(model, "embeddings.LayerNorm", dy, s["sum"], grads, tap)  # [B, T, H]
    tap("embeddings.sum", dx)
    dpositions = dx.sum(0, keepdims=True)  # [1, T, H]: one row of positions, broadcast over the batch
    tap("embeddings.position_embeddings", dpositions)
    lookup_backward(model, "embeddings.position_embeddings", dpositions, F.position_ids(dx.shape[1]), grads, tap)
    tap("embeddings.token_type_embeddings", dx)
    lookup_backward(model, "embeddings.token_type_embeddings", dx, s["types"], grads, tap)
    tap("embeddings.word_embeddings", dx)
    # Last: the tied masked-LM decoder may already have added its part to this table.
    lookup_backward(model, "embeddings.word_embeddings", dx, s["ids"], grads, tap, padding_idx=cfg.pad_token_id)


# ---------------------------------------------------------------------------------------
# One transformer layer
# ---------------------------------------------------------------------------------------


def layer_forward(model, i, x, mask_bias, rng):  # [B, T, H] -> [B, T, H], saved
    """``BertModel.layer`` with dropout, keeping the arrays ``layer_backward`` reads."""
    F, cfg = model.F, model.config
    p, A = f"encoder.layer.{i}.", cfg.num_attention_heads
    act, _ = activation(model)

    q = F.split_heads(dense(model, p + "attention.self.query", x), A)  # [B, A, T, D]
    k = F.split_heads(dense(model, p + "attention.self.key", x), A)  # [B, A, T, D]
    v = F.split_heads(dense(model, p + "attention.self.value", x), A)  # [B, A, T, D]
    scores = F.attention_scores(q, k, model.dtype.type(cfg.head_size ** -0.5))  # [B, A, T, T]
    probs = F.masked_softmax(scores, mask_bias)  # [B, A, T, T]
    dropped, probs_mask = dropout(model, probs, cfg.attention_probs_dropout_prob, rng)  # [B, A, T, T]
    context = F.merge_heads(F.attention_context(dropped, v))  # [B, T, H]

    h = dense(model, p + "attention.output.dense", context)  # [B, T, H]
    h, h_mask = dropout(model, h, cfg.hidden_dropout_prob, rng)  # [B, T, H]
    x1 = add_norm(model, p + "attention.output.LayerNorm", h, x)  # [B, T, H]

    inter = dense(model, p + "intermediate.dense", x1)  # [B, T, I]
    g = act(inter)  # [B, T, I]
    o = dense(model, p + "output.dense", g)  # [B, T, H]
    o, o_mask = dropout(model, o, cfg.hidden_dropout_prob, rng)  # [B, T, H]
    x2 = add_norm(model, p + "output.LayerNorm", o, x1)  # [B, T, H]
    return x2, dict(x=x, q=q, k=k, v=v, probs=probs, probs_mask=probs_mask, context=context,
                    h=h, h_mask=h_mask, x1=x1, inter=inter, g=g, o=o, o_mask=o_mask)


def layer_backward(model, i, dx2, s, grads, tap):  # d output [B, T, H] -> d input [B, T, H]
    """``layer_forward`` from the bottom up: each step's backward, in reverse order."""
    F, cfg = model.F, model.config
    p, A = f"encoder.layer.{i}.", cfg.num_attention_heads
    _, act_backward = activation(model)

    # Feed-forward block: x2 = LayerNorm(dropout(dense(act(dense(x1)))) + x1)
    tap(p + "output.LayerNorm", dx2)
    do, dx1 = add_norm_backward(model, p + "output.LayerNorm", dx2, s["o"], s["x1"], grads, tap)  # [B, T, H] x2
    do = dropout_backward(model, do, s["o_mask"])  # [B, T, H]
    tap(p + "output.dense", do)
    dg = dense_backward(model, p + "output.dense", do, s["g"], grads, tap)  # [B, T, I]
    tap(p + "intermediate.gelu", dg)
    dinter = act_backward(dg, s["inter"])  # [B, T, I]
    tap(p + "intermediate.dense", dinter)
    dx1 = dx1 + dense_backward(model, p + "intermediate.dense", dinter, s["x1"], grads, tap)  # [B, T, H]

    # Attention block: x1 = LayerNorm(dropout(dense(context)) + x)
    tap(p + "attention.output.LayerNorm", dx1)
    dh, dx = add_norm_backward(model, p + "attention.output.LayerNorm", dx1, s["h"], s["x"], grads, tap)
    dh = dropout_backward(model, dh, s["h_mask"])  # [B, T, H]
    tap(p + "attention.output.dense", dh)
    dcontext = dense_backward(model, p + "attention.output.dense", dh, s["context"], grads, tap)  # [B, T, H]
    tap(p + "attention.self.context", dcontext)
    dcontext = F.merge_heads_backward(dcontext, A)  # [B, A, T, D]
    dropped = s["probs"] if s["probs_mask"] is None else F.dropout(s["probs"], s["probs_mask"])  # [B, A, T, T]
    dprobs, dv = F.attention_context_backward(dcontext, dropped, s["v"])  # [B, A, T, T], [B, A, T, D]
    dprobs = dropout_backward(model, dprobs, s["probs_mask"])  # [B, A, T, T]
    tap(p + "attention.self.probs", dprobs)
    dscores = F.masked_softmax_backward(dprobs, s["probs"])  # [B, A, T, T]
    tap(p + "attention.self.scores", dscores)
    scale = model.dtype.type(cfg.head_size ** -0.5)  # 1 / sqrt(D)
    dq, dk = F.attention_scores_backward(dscores, s["q"], s["k"], scale)  # [B, A, T, D] x2

    # The three projections all read x (the layer input), which also feeds the residual.
    for name, dproj in (("value", dv), ("key", dk), ("query", dq)):
        dproj = F.split_heads_backward(dproj)  # [B, T, H]
        tap(p + f"attention.self.{name}", dproj)
        dx = dx + dense_backward(model, p + f"attention.self.{name}", dproj, s["x"], grads, tap)  # [B, T, H]
    return dx


# ---------------------------------------------------------------------------------------
# Pooler
# ---------------------------------------------------------------------------------------


def pooler_forward(model, x):  # [B, T, H] -> [B, H], saved
    first = x[:, 0]  # [B, H], the [CLS] token
    h = dense(model, "pooler.dense", first)  # [B, H]
    return model.F.tanh(h), dict(first=first, h=h, shape=x.shape)


def pooler_backward(model, dpooled, s, grads, tap):  # [B, H] -> [B, T, H]
    tap("pooler", dpooled)
    dh = model.F.tanh_backward(dpooled, s["h"])  # [B, H]
    tap("pooler.dense", dh)
    dx = np.zeros(s["shape"], dpooled.dtype)  # [B, T, H]: only the [CLS] token feeds the pooler
    dx[:, 0] = dense_backward(model, "pooler.dense", dh, s["first"], grads, tap)
    return dx


# ---------------------------------------------------------------------------------------
# Heads and their losses (the loss functions are in heads.py)
# ---------------------------------------------------------------------------------------


def check_labels(model, shape, labels, next_sentence_label):
    """The checked labels of ``model.head`` for inputs of ``shape`` [B, T]."""
    head, (B, T), V = model.head, shape, model.config.vocab_size
    if labels is None:
        raise InputError(f"value_and_grad needs labels for the {head} head",
                         "pass labels=..., as to transformers' BertFor* models")
    if head == "pretraining":
        if next_sentence_label is None:
            raise InputError("the pretraining head needs next_sentence_label [B] as well as labels [B, T]",
                             "pass next_sentence_label=..., 0 where B follows A, 1 where B is random")
        nsl = H.check_class_labels(next_sentence_label, (B,), 2, "next_sentence_label")
        return H.check_class_labels(labels, (B, T), V), nsl
    if next_sentence_label is not None:
        raise InputError(f"next_sentence_label is for head='pretraining'; the {head} head takes labels only",
                         "pass the labels as labels=...")
    if head == "masked-lm":
        return H.check_class_labels(labels, (B, T), V)
    if head == "next-sentence":
        return H.check_class_labels(labels, (B,), 2)
    return H.check_classification_labels(labels, B, model.config.num_labels, model.dtype)  # (problem, labels)


def classification_forward(model, x, targets, rng):  # [B, T, H] -> loss, saved
    problem, labels = targets
    cfg = model.config
    pooled, pooler = pooler_forward(model, x)  # [B, H]
    p = cfg.hidden_dropout_prob if cfg.classifier_dropout is None else cfg.classifier_dropout
    pooled, mask = dropout(model, pooled, p, rng)  # [B, H]
    logits = dense(model, "classifier", pooled)  # [B, N]
    loss = H.classification_loss(problem, logits, labels)
    return loss, dict(pooler=pooler, pooled=pooled, mask=mask, logits=logits, problem=problem, labels=labels)


def classification_backward(model, s, grads, tap):  # -> d last hidden state [B, T, H]
    dlogits = H.classification_loss_backward(s["problem"], s["logits"], s["labels"])  # [B, N]
    tap("classifier", dlogits)
    dpooled = dense_backward(model, "classifier", dlogits, s["pooled"], grads, tap)  # [B, H]
    dpooled = dropout_backward(model, dpooled, s["mask"])  # [B, H]
    return pooler_backward(model, dpooled, s["pooler"], grads, tap)


def next_sentence_forward(model, x, labels, rng):  # [B, T, H] -> loss, saved
    pooled, pooler = pooler_forward(model, x)  # [B, H]
    logits = dense(model, "cls.seq_relationship", pooled)  # [B, 2]
    return H.cross_entropy(logits, labels), dict(pooler=pooler, pooled=pooled, logits=logits, labels=labels)


def next_sentence_backward(model, s, grads, tap):  # -> d last hidden state [B, T, H]
    dlogits = H.cross_entropy_backward(s["logits"], s["labels"])  # [B, 2]
    tap("cls.seq_relationship", dlogits)
    dpooled = dense_backward(model, "cls.seq_relationship", dlogits, s["pooled"], grads, tap)  # [B, H]
    return pooler_backward(model, dpooled, s["pooler"], grads, tap)


WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def decoder_names(weights):
    """The masked-LM decoder's weight and bias: tied to the word embeddings and
    cls.predictions.bias, unless the file stores untied ones (as heads.BertForMaskedLM reads them)."""
    weight = "cls.predictions.decoder.weight" if "cls.predictions.decoder.weight" in weights else WORD_EMBEDDINGS
    bias = "cls.predictions.decoder.bias" if "cls.predictions.decoder.bias" in weights else "cls.predictions.bias"
    return weight, bias


def masked_lm_forward(model, x, labels, rng):  # [B, T, H], labels [B, T] -> loss, saved
    """The transform and decoder on the labelled positions only: the others add nothing to the
    loss (label -100), so their logits [V each] are never computed."""
    F, w = model.F, model.weights
    act, _ = activation(model)
    positions = labels != H.IGNORE_INDEX  # [B, T]
    xs = x[positions]  # [n, H]
    h = dense(model, "cls.predictions.transform.dense", xs)  # [n, H]
    g = act(h)  # [n, H]
    z = norm(model, "cls.predictions.transform.LayerNorm", g)  # [n, H]
    weight, bias = decoder_names(w)
    logits = F.linear(z, w[weight], w[bias])  # [n, H] @ [H, V] -> [n, V]
    loss = H.cross_entropy(logits, labels[positions])
    return loss, dict(positions=positions, shape=x.shape, xs=xs, h=h, g=g, z=z, logits=logits,
                      labels=labels[positions])


def masked_lm_backward(model, s, grads, tap):  # -> d last hidden state [B, T, H]
    F, w = model.F, model.weights
    _, act_backward = activation(model)
    at = positions_tap(tap, s["positions"])  # taps [n, ...] gradients as [B, T, ...] (0 elsewhere)
    p = "cls.predictions.transform."
    dlogits = H.cross_entropy_backward(s["logits"], s["labels"])  # [n, V]
    at("cls.predictions", dlogits)
    weight, bias = decoder_names(w)
    dz, dweight, dbias = F.linear_backward(dlogits, s["z"], w[weight])  # [n, H], [V, H], [V]
    add_grad(grads, tap, weight, dweight, final=weight != WORD_EMBEDDINGS)  # tied: the lookup adds the rest
    add_grad(grads, tap, bias, dbias)
    at(p + "LayerNorm", dz)
    dg = norm_backward(model, p + "LayerNorm", dz, s["g"], grads, tap)  # [n, H]
    at(p + "transform_act_fn", dg)
    dh = act_backward(dg, s["h"])  # [n, H]
    at(p + "dense", dh)
    dxs = dense_backward(model, p + "dense", dh, s["xs"], grads, tap)  # [n, H]
    dx = np.zeros(s["shape"], dxs.dtype)  # [B, T, H]
    dx[s["positions"]] = dxs
    return dx


def positions_tap(tap, positions):
    """A tap for the masked-LM head's [n, ...] gradients that shows them at full size [B, T, ...],
    zero at unlabelled positions (what PyTorch, which runs the head on every position, computes)."""
    if tap is no_tap:
        return no_tap

    def at(name, grad):
        full = np.zeros(positions.shape + grad.shape[1:], grad.dtype)  # [B, T, ...]
        full[positions] = grad
        tap(name, full)

    return at


def pretraining_forward(model, x, targets, rng):  # [B, T, H] -> loss, saved
    labels, next_sentence_label = targets
    mlm_loss, mlm = masked_lm_forward(model, x, labels, rng)
    nsp_loss, nsp = next_sentence_forward(model, x, next_sentence_label, rng)
    return mlm_loss + nsp_loss, dict(mlm=mlm, nsp=nsp)  # as BertForPreTraining: the sum


def pretraining_backward(model, s, grads, tap):  # -> d last hidden state [B, T, H]
    dx_nsp = next_sentence_backward(model, s["nsp"], grads, tap)  # [B, T, H]
    dx_mlm = masked_lm_backward(model, s["mlm"], grads, tap)  # [B, T, H]
    return dx_nsp + dx_mlm


HEAD_STEPS = {  # model.head -> (forward to the loss, backward to the last hidden state)
    "classification": (classification_forward, classification_backward),
    "next-sentence": (next_sentence_forward, next_sentence_backward),
    "masked-lm": (masked_lm_forward, masked_lm_backward),
    "pretraining": (pretraining_forward, pretraining_backward),
}
