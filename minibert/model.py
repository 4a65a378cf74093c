"""The BERT encoder's forward pass as a flat sequence of named steps.

Each step's name is the Hugging Face module it corresponds to (plus the step inside it,
such as ``attention.self.scores``), so a value here and its twin in PyTorch are found by the
same string. Each step passes its value through ``tap(name, value)``: when nobody listens,
``tap`` returns the value untouched; a trace (``minibert.trace``) records it, and an
intervention may return a replacement.

The math lives in ``ops`` (NumPy, the reference); a backend is a module with the same
functions (``kernels`` holds the Numba twins). The backend is chosen in one place:
``BertModel.__init__``.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import kernels, ops
from .config import BertConfig
from .errors import InputError

# B = batch, T = sequence length, H = hidden size, A = heads, D = H // A, I = intermediate size

BACKENDS = {"numpy": ops, "numba": kernels}  # kernels: Numba twins of ops, same signatures
DEFAULT_BACKEND = "numba"
DTYPES = {"float32": np.float32, "float64": np.float64}


def no_tap(name, value):
    """The tap used when nothing is traced: every value passes through unchanged."""
    return value


@dataclass
class BertOutput:
    """What ``BertModel.__call__`` returns, with the field names of transformers."""

    last_hidden_state: np.ndarray  # [B, T, H]
    pooler_output: Optional[np.ndarray]  # [B, H]; None when the file has no pooler (a masked-LM checkpoint)
    hidden_states: Optional[tuple] = None  # L + 1 arrays [B, T, H]: embeddings, then each layer
    attentions: Optional[tuple] = None  # L arrays [B, A, T, T]: each layer's attention probabilities
    logits: Optional[np.ndarray] = None  # from a task head, when the model has one

    def __getitem__(self, key):
        return getattr(self, key)


class BertModel:
    """A BERT encoder (transformers' ``BertModel``) computing in NumPy.

    Build it with ``minibert.load(path)``; call it like the PyTorch model::

        out = model(input_ids, attention_mask=mask)   # [B, T] ints -> out.last_hidden_state [B, T, H]
    """

    def __init__(self, config: BertConfig, weights: dict, dtype="float32", backend="numpy"):
        if dtype not in DTYPES:
            raise InputError(f"dtype {dtype!r} is not supported", f"use one of {', '.join(DTYPES)}")
        if backend not in BACKENDS:
            raise InputError(f"backend {backend!r} is not available", f"use one of {', '.join(BACKENDS)}")
        self.config = config
        self.dtype = np.dtype(DTYPES[dtype])
        self.backend = backend
        self.F = BACKENDS[backend]  # the module whose functions compute each step
        # Every float tensor in the compute dtype, C-contiguous, under its Hugging Face name.
        self.weights = {
            name: np.ascontiguousarray(w, dtype=self.dtype) if np.issubdtype(w.dtype, np.floating) else w
            for name, w in weights.items()
        }
        # transformers builds BertForMaskedLM without the pooling layer: no pooler, no pooler_output.
        self.has_pooler = "pooler.dense.weight" in self.weights

    # -----------------------------------------------------------------------------------
    # Inputs
    # -----------------------------------------------------------------------------------

    def check_inputs(self, input_ids, attention_mask=None, token_type_ids=None):
        """Validate and normalise the inputs to [B, T] int64 arrays, with clear errors."""
        cfg = self.config
        input_ids = _as_int_array("input_ids", input_ids)
        if input_ids.ndim == 1:  # a single sequence: a batch of one
            input_ids = input_ids[None, :]
        if input_ids.ndim != 2:
            raise InputError(f"input_ids has shape {input_ids.shape}, expected [batch, seq_len]", "pass a 2-D array of token ids")
        B, T = input_ids.shape
        if T == 0 or B == 0:
            raise InputError(f"input_ids has shape {input_ids.shape}: empty batch or sequence", "pass at least one token per row")
        if T > cfg.max_position_embeddings:
            raise InputError(
                f"sequence length {T} exceeds max_position_embeddings={cfg.max_position_embeddings}",
                f"truncate the input to at most {cfg.max_position_embeddings} tokens",
            )
        if input_ids.min() < 0 or input_ids.max() >= cfg.vocab_size:  # two reductions; find the culprit only on error
            b, t = np.argwhere((input_ids < 0) | (input_ids >= cfg.vocab_size))[0]
            raise InputError(
                f"input_ids[{b}, {t}] = {input_ids[b, t]} is outside the vocabulary [0, {cfg.vocab_size})",
                "use the tokenizer of this model's vocabulary",
            )
        if attention_mask is None and token_type_ids is None:  # the common case: nothing more to check
            return input_ids, np.ones((B, T), np.int64), np.zeros((B, T), np.int64)
        attention_mask = np.ones((B, T), np.int64) if attention_mask is None else _as_int_array("attention_mask", attention_mask)
        token_type_ids = np.zeros((B, T), np.int64) if token_type_ids is None else _as_int_array("token_type_ids", token_type_ids)
        for name, a in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if a.ndim == 1:
                a = a[None, :]
            if a.shape != (B, T):
                raise InputError(f"{name} has shape {a.shape} but input_ids has shape {(B, T)}", f"give {name} the same shape as input_ids")
            if name == "attention_mask":
                attention_mask = a
            else:
                token_type_ids = a
        if attention_mask.min() < 0 or attention_mask.max() > 1:  # integers: only 0 and 1 pass
            raise InputError("attention_mask must hold only 0 (padding) and 1 (token)", "build the mask from the tokenizer's attention_mask")
        if token_type_ids.min() < 0 or token_type_ids.max() >= cfg.type_vocab_size:
            b, t = np.argwhere((token_type_ids < 0) | (token_type_ids >= cfg.type_vocab_size))[0]
            raise InputError(
                f"token_type_ids[{b}, {t}] = {token_type_ids[b, t]} is outside [0, {cfg.type_vocab_size})",
                "use 0 for the first segment and 1 for the second",
            )
        return input_ids, attention_mask, token_type_ids

    # -----------------------------------------------------------------------------------
    # Forward pass
    # -----------------------------------------------------------------------------------

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 output_hidden_states=False, output_attentions=False, tap=no_tap):
        input_ids, attention_mask, token_type_ids = self.check_inputs(input_ids, attention_mask, token_type_ids)
        x = self.embeddings(input_ids, token_type_ids, tap)  # [B, T, H]
        mask_bias = self.F.attention_mask_bias(attention_mask, self.dtype)  # [B, 1, 1, T]
        hidden_states, attentions = [x], []
        for i in range(self.config.num_hidden_layers):
            x, probs = self.layer(i, x, mask_bias, tap)  # [B, T, H], [B, A, T, T]
            hidden_states.append(x)
            attentions.append(probs)
        pooled = self.pooler(x, tap) if self.has_pooler else None  # [B, H]
        return BertOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    forward = __call__

    def trace(self, input_ids, attention_mask=None, token_type_ids=None, only=None, patch=None):
        """Run the forward pass and return a ``minibert.trace.Trace`` of its named steps.

        ``only``: glob patterns of the steps to keep (``"encoder.layer.0.*"``; TransformerLens
        names such as ``"blocks.0.attn.hook_pattern"`` also work); default: every step.
        ``patch``: name -> function(value) -> new value, used in place of
        that step's value for the rest of the pass. ``MINIBERT_BREAK=<name>`` stops in pdb there.
        """
        from . import trace

        return trace.capture(self, input_ids, attention_mask, token_type_ids, only=only, patch=patch)

    def embeddings(self, input_ids, token_type_ids, tap=no_tap):  # [B, T] ints -> [B, T, H]
        F, w, T = self.F, self.weights, input_ids.shape[1]
        words = tap("embeddings.word_embeddings", F.embedding(input_ids, w["embeddings.word_embeddings.weight"]))  # [B, T, H]
        types = tap("embeddings.token_type_embeddings", F.embedding(token_type_ids, w["embeddings.token_type_embeddings.weight"]))  # [B, T, H]
        positions = tap("embeddings.position_embeddings", F.embedding(ops.position_ids(T), w["embeddings.position_embeddings.weight"]))  # [1, T, H]
        x = tap("embeddings.sum", words + types + positions)  # [B, T, H], summed in transformers' order
        return tap("embeddings.LayerNorm", F.layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.config.layer_norm_eps))

    def layer(self, i, x, mask_bias, tap=no_tap):  # [B, T, H] -> [B, T, H], [B, A, T, T]
        """One transformer block: self-attention, add & norm, feed-forward, add & norm."""
        F, w, cfg = self.F, self.weights, self.config
        p = f"encoder.layer.{i}."
        eps = cfg.layer_norm_eps

        # Self-attention: project to queries, keys and values, one slice of H per head.
        q = tap(p + "attention.self.query", F.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))  # [B, T, H]
        k = tap(p + "attention.self.key", F.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))  # [B, T, H]
        v = tap(p + "attention.self.value", F.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))  # [B, T, H]
        A = cfg.num_attention_heads
        q, k, v = F.split_heads(q, A), F.split_heads(k, A), F.split_heads(v, A)  # [B, A, T, D] each
        scale = self.dtype.type(cfg.head_size ** -0.5)  # 1 / sqrt(D)
        scores = tap(p + "attention.self.scores", F.attention_scores(q, k, scale))  # [B, A, T, T], scaled, before the mask
        probs = tap(p + "attention.self.probs", F.masked_softmax(scores, mask_bias))  # [B, A, T, T]
        context = tap(p + "attention.self.context", F.merge_heads(F.attention_context(probs, v)))  # [B, T, H]

        # Output projection, residual connection, LayerNorm.
        h = tap(p + "attention.output.dense", F.linear(context, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"]))  # [B, T, H]
        x = tap(p + "attention.output.LayerNorm", F.add_layer_norm(h, x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps))  # [B, T, H]

        # Feed-forward: widen to I, the activation (config.hidden_act, GELU in BERT), back to H; residual connection, LayerNorm.
        act = getattr(F, cfg.hidden_act)  # the function of that name: F.gelu, F.gelu_new, F.relu, ... (config.SUPPORTED_ACTIVATIONS)
        h = tap(p + "intermediate.dense", F.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))  # [B, T, I]
        h = tap(p + "intermediate.gelu", act(h))  # [B, T, I]
        h = tap(p + "output.dense", F.linear(h, w[p + "output.dense.weight"], w[p + "output.dense.bias"]))  # [B, T, H]
        x = tap(p + "output.LayerNorm", F.add_layer_norm(h, x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps))  # [B, T, H]
        return x, probs

    def pooler(self, x, tap=no_tap):  # [B, T, H] -> [B, H]
        """Dense layer and tanh on the first token ([CLS])."""
        w = self.weights
        h = tap("pooler.dense", self.F.linear(x[:, 0], w["pooler.dense.weight"], w["pooler.dense.bias"]))  # [B, H]
        return tap("pooler", np.tanh(h))  # [B, H]


def _as_int_array(name, value):
    """Turn a list or array of token ids into an int64 array, or say clearly why not."""
    try:
        a = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise InputError(f"{name} is not a rectangular array ({e})", "pad every row to the same length") from None
    if a.dtype == bool:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and a.size and np.all(a == np.round(a)) and name == "attention_mask":
            a = a.astype(np.int64)  # a float 0/1 mask, as some pipelines build it
        else:
            raise InputError(f"{name} has dtype {a.dtype}, expected integers", f"pass {name} as an integer array (np.int64)")
    return a.astype(np.int64, copy=False)


def load(path, dtype="float32", backend=DEFAULT_BACKEND, verify=True, head=None):
    """Load a converted minibert .h5 file as a ready-to-call ``BertModel``.

    ``dtype``: "float32" (as PyTorch) or "float64" (every step in float64).
    ``backend``: "numba" (the fast kernels) or "numpy" (the readable reference); default ``DEFAULT_BACKEND``.
    ``verify``: check every tensor's SHA-256 against the one stored at conversion.
    ``head``: None for the bare encoder, or "masked-lm", "next-sentence", "classification"
    for the encoder with that task head (``minibert.heads``); its outputs carry ``logits``.
    """
    from . import weights as weights_format

    w = weights_format.load(path, verify=verify)
    if head is not None:
        from .heads import check_head_available

        check_head_available(head, w.heads, path)  # before building anything: a clear HeadError
    model = BertModel(w.config, w.tensors, dtype=dtype, backend=backend)
    model.path = str(path)
    model.heads = list(w.heads)  # the task heads the file holds
    if head is not None:
        from .heads import HEAD_CLASSES

        model = HEAD_CLASSES[head](model)
        model.path = str(path)
    return model
