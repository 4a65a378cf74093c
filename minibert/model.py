"""The BERT encoder's forward pass as a flat sequence of named steps.

Each step's name is the Hugging Face module it corresponds to (plus the step inside it,
such as ``attention.self.scores``), so a value here and its twin in PyTorch are found by the
same string. Each step passes its value through ``tap(name, value)``: when nobody listens,
``tap`` returns the value untouched; a trace (``minibert.trace``) records it, and an
intervention may return a replacement.

Every step computes through the backend ``self.F``: ``ops`` (NumPy, the readable reference)
or ``kernels.backend`` (``ops`` with Numba twins of some functions). The backend is chosen in
one place, ``BertModel.__init__``. Inputs are checked before the forward pass, in
``inputs.check_inputs``.

When nothing is traced and no attention probabilities are asked for, a Numba model computes
the same pass fused, in ``minibert.fast`` (fewer, larger steps; equal to this one to rounding,
tested in tests/test_fast.py). ``model.use_fast_path = False`` turns that off; a trace never
uses it.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import ops
from .config import BertConfig
from .inputs import DEFAULT_BACKEND, check_backend, check_dtype, check_inputs
from .trace import Trace, capture

__all__ = ["BertModel", "BertOutput", "backend_functions", "fast_path_supports", "no_tap"]

# B = batch, T = sequence length, H = hidden size, A = heads, D = H // A, I = intermediate size


def no_tap(name, value):
    """The tap used when nothing is traced: every value passes through unchanged."""
    return value


def backend_functions(backend):
    """The functions a backend computes with: ``ops`` ("numpy") or ``kernels.backend`` ("numba")."""
    if backend == "numpy":
        return ops
    from . import kernels  # imports numba: only once a Numba model is built

    return kernels.backend


def fast_path_supports(config):
    """True when ``minibert.fast`` computes this config's model (its activation has a kernel)."""
    from . import fast  # imports numba: only once a Numba model is built

    return fast.supports(config)


@dataclass
class BertOutput:
    """What ``BertModel.__call__`` returns, with the field names of transformers."""

    last_hidden_state: np.ndarray  # [B, T, H]
    pooler_output: Optional[np.ndarray]  # [B, H]; None when the file has no pooler (masked-LM)
    hidden_states: Optional[tuple] = None  # L + 1 arrays [B, T, H]: embeddings, then each layer
    attentions: Optional[tuple] = None  # L arrays [B, A, T, T]: each layer's attention probs
    logits: Optional[np.ndarray] = None  # from a task head, when the model has one


class BertModel:
    """A BERT encoder (transformers' ``BertModel``) computing in NumPy.

    Build it with ``minibert.load(path)``; call it like the PyTorch model::

        out = model(input_ids, attention_mask=mask)  # [B, T] ints -> .last_hidden_state [B, T, H]

    ``weights``: name -> array, under the Hugging Face names. ``path``: the file they came from
    (recorded in traces); ``heads``: the task heads that file holds (``minibert.load`` fills both).
    """

    def __init__(self, config: BertConfig, weights: dict, dtype: str = "float32",
                 backend: str = DEFAULT_BACKEND, path: Optional[str] = None, heads=()):
        self.config = config
        self.dtype = check_dtype(dtype)
        self.backend = check_backend(backend)
        self.F = backend_functions(backend)  # the module whose functions compute each step
        # Every float tensor in the compute dtype, C-contiguous, under its Hugging Face name.
        self.weights = {
            name: np.ascontiguousarray(w, self.dtype) if np.issubdtype(w.dtype, np.floating) else w
            for name, w in weights.items()
        }
        # transformers builds BertForMaskedLM without a pooling layer: no pooler, no pooler_output.
        self.has_pooler = "pooler.dense.weight" in self.weights
        self.path = path
        self.heads = list(heads)
        # Untraced calls of a Numba model go through minibert.fast (see the module docstring).
        self.use_fast_path = self.backend == "numba" and fast_path_supports(config)

    def forward(self, input_ids, attention_mask, token_type_ids,
                output_hidden_states=False, output_attentions=False, tap=no_tap) -> BertOutput:
        """The forward pass on checked inputs: three [B, T] int64 arrays (``model(...)`` checks)."""
        if self.use_fast_path and tap is no_tap and not output_attentions:  # nothing to record
            from . import fast  # imports numba, as kernels: only a Numba model gets here

            x, pooled, hidden = fast.forward(self, input_ids, attention_mask, token_type_ids,
                                             output_hidden_states)
            return BertOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden)
        x = self.embeddings(input_ids, token_type_ids, tap)  # [B, T, H]
        mask_bias = self.F.attention_mask_bias(attention_mask, self.dtype)  # [B, 1, 1, T]
        hidden_states, attentions = [x], []  # kept only when asked for
        for i in range(self.config.num_hidden_layers):
            x, probs = self.layer(i, x, mask_bias, tap)  # [B, T, H], [B, A, T, T]
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)
        return BertOutput(
            last_hidden_state=x,  # [B, T, H]
            pooler_output=self.pooler(x, tap) if self.has_pooler else None,  # [B, H]
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 tap=no_tap) -> BertOutput:
        """Check the inputs (lists or arrays, [T] or [B, T]: ``inputs.check_inputs``); forward."""
        ids, mask, types = check_inputs(self.config, input_ids, attention_mask, token_type_ids)
        return self.forward(ids, mask, types, output_hidden_states, output_attentions, tap)

    def trace(self, input_ids, attention_mask=None, token_type_ids=None,
              only=None, patch=None) -> Trace:
        """Run the forward pass and return a ``minibert.trace.Trace`` of its named steps.

        ``only``: glob patterns of the steps to keep (``"encoder.layer.0.*"``; TransformerLens
        names such as ``"blocks.0.attn.hook_pattern"`` also work); default: every step.
        ``patch``: name -> function(value) -> new value, used in place of
        that step's value for the rest of the pass. ``MINIBERT_BREAK=<name>`` stops in pdb there.
        """
        return capture(self, input_ids, attention_mask, token_type_ids, only=only, patch=patch)

    # -----------------------------------------------------------------------------------
    # The steps: embeddings, L transformer layers, pooler
    # -----------------------------------------------------------------------------------

    def embeddings(self, input_ids, token_type_ids, tap=no_tap):  # [B, T] ints -> [B, T, H]
        """Word + token type + position embeddings, then LayerNorm."""
        position_ids = self.F.position_ids(input_ids.shape[1])  # [1, T]: 0, 1, ..., T-1
        words = self.lookup("embeddings.word_embeddings", input_ids, tap)  # [B, T, H]
        types = self.lookup("embeddings.token_type_embeddings", token_type_ids, tap)  # [B, T, H]
        positions = self.lookup("embeddings.position_embeddings", position_ids, tap)  # [1, T, H]
        x = tap("embeddings.sum", words + types + positions)  # [B, T, H], transformers' order
        return self.norm("embeddings.LayerNorm", x, tap)  # [B, T, H]

    def layer(self, i, x, mask_bias, tap=no_tap):  # [B, T, H] -> [B, T, H], [B, A, T, T]
        """One transformer block: self-attention, add & norm, feed-forward, add & norm."""
        F, A, p = self.F, self.config.num_attention_heads, f"encoder.layer.{i}."

        # Self-attention: project to queries, keys and values, one slice of H per head.
        q = F.split_heads(self.dense(p + "attention.self.query", x, tap), A)  # [B, A, T, D]
        k = F.split_heads(self.dense(p + "attention.self.key", x, tap), A)  # [B, A, T, D]
        v = F.split_heads(self.dense(p + "attention.self.value", x, tap), A)  # [B, A, T, D]
        scale = self.dtype.type(self.config.head_size ** -0.5)  # 1 / sqrt(D)
        scores = tap(p + "attention.self.scores", F.attention_scores(q, k, scale))  # [B, A, T, T]
        probs = tap(p + "attention.self.probs", F.masked_softmax(scores, mask_bias))  # [B, A, T, T]
        context = F.merge_heads(F.attention_context(probs, v))  # [B, A, T, D] -> [B, T, H]
        context = tap(p + "attention.self.context", context)  # [B, T, H]

        # Output projection, then the residual connection and LayerNorm.
        h = self.dense(p + "attention.output.dense", context, tap)  # [B, T, H]
        x = self.add_norm(p + "attention.output.LayerNorm", h, x, tap)  # [B, T, H]

        # Feed-forward: widen to I, the activation (config.hidden_act: exact GELU in BERT), back
        # to H; residual connection, LayerNorm.
        act = getattr(F, self.config.hidden_act)  # F.gelu, F.gelu_new, F.relu, ...
        h = self.dense(p + "intermediate.dense", x, tap)  # [B, T, I]
        h = tap(p + "intermediate.gelu", act(h))  # [B, T, I]
        h = self.dense(p + "output.dense", h, tap)  # [B, T, H]
        x = self.add_norm(p + "output.LayerNorm", h, x, tap)  # [B, T, H]
        return x, probs

    def pooler(self, x, tap=no_tap):  # [B, T, H] -> [B, H]
        """Dense layer and tanh on the first token ([CLS])."""
        h = self.dense("pooler.dense", x[:, 0], tap)  # [B, H]
        return tap("pooler", self.F.tanh(h))  # [B, H]

    # -----------------------------------------------------------------------------------
    # One named step each: fetch the weights stored under `name`, compute, tap `name`
    # -----------------------------------------------------------------------------------

    def dense(self, name, x, tap=no_tap):  # [..., in] -> [..., out]
        """``nn.Linear`` ``name``: x @ name.weight^T + name.bias."""
        w = self.weights
        return tap(name, self.F.linear(x, w[name + ".weight"], w[name + ".bias"]))

    def lookup(self, name, ids, tap=no_tap):  # [B, T] ints -> [B, T, H]
        """``nn.Embedding`` ``name``: one row of name.weight per id."""
        return tap(name, self.F.embedding(ids, self.weights[name + ".weight"]))

    def norm(self, name, x, tap=no_tap):  # [..., H] -> [..., H]
        """``nn.LayerNorm`` ``name``, with name.weight, name.bias and the config's eps."""
        w, eps = self.weights, self.config.layer_norm_eps
        return tap(name, self.F.layer_norm(x, w[name + ".weight"], w[name + ".bias"], eps))

    def add_norm(self, name, x, residual, tap=no_tap):  # [..., H], [..., H] -> [..., H]
        """The residual connection, then ``nn.LayerNorm`` ``name``: LayerNorm(x + residual)."""
        w, eps = self.weights, self.config.layer_norm_eps
        h = self.F.add_layer_norm(x, residual, w[name + ".weight"], w[name + ".bias"], eps)
        return tap(name, h)
