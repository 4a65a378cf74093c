"""Checking what a caller hands the model, in one place, with errors that say how to fix it.

``check_inputs`` turns token ids, attention mask and token types (lists or arrays, one
sequence or a batch) into [B, T] int64 arrays, or raises an ``InputError`` naming the tensor,
what was expected and what was found. The model (``BertModel.__call__``), the trace
(``trace.capture``) and the PyTorch reference (``reference.trace``) all call it, so the three
accept and refuse exactly the same inputs. ``check_dtype`` and ``check_backend`` do the same
for a model's settings.
"""

import numpy as np

from .errors import InputError

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "DTYPES", "check_backend", "check_dtype", "check_inputs"]

# B = batch, T = sequence length

DTYPES = {"float32": np.float32, "float64": np.float64}
BACKENDS = ("numpy", "numba")  # ops (NumPy, the readable reference) or kernels (Numba twins)
DEFAULT_BACKEND = "numba"  # the one default of BertModel(...), minibert.load() and the CLI


def check_dtype(dtype) -> np.dtype:
    """The compute dtype, by name: "float32" (as PyTorch) or "float64"."""
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported", f"use one of {', '.join(DTYPES)}")
    return np.dtype(DTYPES[dtype])


def check_backend(backend) -> str:
    """The backend name: "numpy" or "numba"."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r} is not available", f"use one of {', '.join(BACKENDS)}")
    return backend


def check_inputs(config, input_ids, attention_mask=None, token_type_ids=None):
    """Validate and normalise the inputs to three [B, T] int64 arrays, with clear errors.

    ``config``: the model's ``BertConfig`` (vocabulary size, positions, token types).
    A 1-D ``input_ids`` is one sequence: a batch of one. An omitted mask is all ones, omitted
    token types all zeros.
    """
    input_ids = as_int_array("input_ids", input_ids)
    if input_ids.ndim == 1:  # a single sequence: a batch of one
        input_ids = input_ids[None, :]
    if input_ids.ndim != 2:
        raise InputError(
            f"input_ids has shape {input_ids.shape}, expected [batch, seq_len]", "pass a 2-D array of token ids"
        )
    B, T = input_ids.shape
    if T == 0 or B == 0:
        raise InputError(
            f"input_ids has shape {input_ids.shape}: empty batch or sequence", "pass at least one token per row"
        )
    if T > config.max_position_embeddings:
        raise InputError(
            f"sequence length {T} exceeds max_position_embeddings={config.max_position_embeddings}",
            f"truncate the input to at most {config.max_position_embeddings} tokens",
        )
    # Two reductions; the culprit is searched for only on error.
    if input_ids.min() < 0 or input_ids.max() >= config.vocab_size:
        b, t = np.argwhere((input_ids < 0) | (input_ids >= config.vocab_size))[0]
        raise InputError(
            f"input_ids[{b}, {t}] = {input_ids[b, t]} is outside the vocabulary [0, {config.vocab_size})",
            "use the tokenizer of this model's vocabulary",
        )
    if attention_mask is None and token_type_ids is None:  # the common case: nothing more to check
        return input_ids, np.ones((B, T), np.int64), np.zeros((B, T), np.int64)
    given_mask, given_types = attention_mask is not None, token_type_ids is not None  # else defaults, valid
    attention_mask = _batch_shaped("attention_mask", attention_mask, (B, T), default=np.ones)
    token_type_ids = _batch_shaped("token_type_ids", token_type_ids, (B, T), default=np.zeros)
    if given_mask and (attention_mask.min() < 0 or attention_mask.max() > 1):  # integers: only 0 and 1 pass
        raise InputError(
            "attention_mask must hold only 0 (padding) and 1 (token)",
            "build the mask from the tokenizer's attention_mask",
        )
    if given_types and (token_type_ids.min() < 0 or token_type_ids.max() >= config.type_vocab_size):
        b, t = np.argwhere((token_type_ids < 0) | (token_type_ids >= config.type_vocab_size))[0]
        raise InputError(
            f"token_type_ids[{b}, {t}] = {token_type_ids[b, t]} is outside [0, {config.type_vocab_size})",
            "use 0 for the first segment and 1 for the second",
        )
    return input_ids, attention_mask, token_type_ids


def _batch_shaped(name, value, shape, default):  # None, [T] or [B, T] -> [B, T] int64
    if value is None:
        return default(shape, np.int64)
    a = as_int_array(name, value)
    if a.ndim == 1:
        a = a[None, :]
    if a.shape != shape:
        raise InputError(
            f"{name} has shape {a.shape} but input_ids has shape {shape}", f"give {name} the same shape as input_ids"
        )
    return a


def as_int_array(name, value):
    """Turn a list or array of token ids into an int64 array, or say clearly why not."""
    try:
        a = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise InputError(f"{name} is not a rectangular array ({e})", "pad every row to the same length") from None
    if a.dtype == bool:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        is_whole = np.issubdtype(a.dtype, np.floating) and a.size and np.all(a == np.round(a))
        if is_whole and name == "attention_mask":
            a = a.astype(np.int64)  # a float 0/1 mask, as some pipelines build it
        else:
            raise InputError(
                f"{name} has dtype {a.dtype}, expected integers", f"pass {name} as an integer array (np.int64)"
            )
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:  # would wrap to a negative int64
        index = tuple(int(i) for i in np.argwhere(a > np.iinfo(np.int64).max)[0])
        raise InputError(f"{name}{list(index)} = {int(a[index])} is too large to be an id or a mask value",
                         f"pass {name} with values from the tokenizer")
    return a.astype(np.int64, copy=False)
