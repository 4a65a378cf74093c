"""The same named trace, computed by transformers' PyTorch ``BertModel``: the reference.

``reference.trace(path, input_ids, ...)`` builds a transformers ``BertModel`` (eager
attention) from the tensors of a minibert ``.h5`` file (``load_state_dict``: only the ``.h5``
file and torch are needed, no Hugging Face directory), runs it with forward hooks and returns
a ``minibert.trace.Trace`` whose names are minibert's hook points.

Most steps are a module's output, read by a forward hook. The steps that happen inside a
module's ``forward`` without a module of their own are taken as transformers computes them
(``transformers/models/bert/modeling_bert.py``, 5.23.0):

* ``embeddings.sum``: the input of ``embeddings.LayerNorm`` (a forward pre-hook);
* ``attention.self.scores``: recomputed from the ``query`` and ``key`` outputs exactly as
  ``eager_attention_forward`` does: ``matmul(q, k.transpose(2, 3)) * scaling``;
* ``attention.self.probs`` and ``.context``: the two outputs of ``BertSelfAttention``
  (eager attention returns its softmax weights);
* ``intermediate.gelu``: the output of ``BertIntermediate`` (dense, then the activation);
* ``pooler``: the output of ``pooler.activation`` (tanh).

torch and transformers are imported here only, when called (the ``dev`` extra).
"""

import numpy as np

from . import weights as weights_format
from .config import BertConfig
from .errors import MinibertError
from .inputs import check_inputs
from .trace import Trace

__all__ = ["torch_model", "trace", "hf_config"]

TORCH_DTYPES = ("float32", "float64")


def _import_torch():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MinibertError(
            f"the PyTorch reference needs torch and transformers ({e})",
            "pip install 'minibert[dev]'  (torch==2.13.0, transformers==5.23.0)",
        ) from None
    return torch, transformers


def hf_config(config: BertConfig, **overrides):
    """The transformers ``BertConfig`` with the sizes of a minibert ``BertConfig``.

    ``overrides``: other transformers config fields (e.g. ``id2label``). The attention
    implementation is left at transformers' default; ``torch_model`` asks for eager attention.
    """
    _, transformers = _import_torch()
    c = config
    return transformers.BertConfig(**{
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings, "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps, "hidden_act": c.hidden_act, "pad_token_id": c.pad_token_id,
        **overrides,
    })


def torch_model(weights, dtype="float32"):
    """A transformers ``BertModel`` (eager attention, eval mode) holding a .h5 file's tensors.

    ``weights``: a path to a minibert .h5 file, or a ``minibert.weights.WeightsFile``.
    """
    torch, transformers = _import_torch()
    if dtype not in TORCH_DTYPES:
        raise MinibertError(
            f"dtype {dtype!r} is not supported by the reference", f"use one of {', '.join(TORCH_DTYPES)}"
        )
    w = weights if isinstance(weights, weights_format.WeightsFile) else weights_format.load(weights)
    config = hf_config(w.config)
    config._attn_implementation = "eager"  # SDPA returns no attention probabilities
    model = transformers.BertModel(
        config, add_pooling_layer=weights_format.has_pooler(w.tensors)
    )  # a masked-LM file has none
    encoder_names = set(model.state_dict())
    state = {name: torch.from_numpy(np.ascontiguousarray(t)) for name, t in w.tensors.items() if name in encoder_names}
    model.load_state_dict(state, strict=True)  # every encoder tensor must come from the file
    model = model.double() if dtype == "float64" else model.float()
    return model.eval()


def trace(weights, input_ids, attention_mask=None, token_type_ids=None, dtype="float32", model=None):
    """Run transformers' BertModel on the inputs and return a ``Trace`` named like minibert's.

    ``weights``: a .h5 path or WeightsFile (ignored when ``model``, a ready ``torch_model``, is
    given). Inputs are checked with the same rules as ``minibert.BertModel``.
    """
    torch, transformers = _import_torch()
    if dtype not in TORCH_DTYPES:
        raise MinibertError(
            f"dtype {dtype!r} is not supported by the reference", f"use one of {', '.join(TORCH_DTYPES)}"
        )
    if model is None:
        w = weights if isinstance(weights, weights_format.WeightsFile) else weights_format.load(weights)
        model = torch_model(w, dtype)
        config = w.config
    else:
        config = BertConfig.from_dict(model.config.to_dict())
    input_ids, attention_mask, token_type_ids = check_inputs(config, input_ids, attention_mask, token_type_ids)

    values = {}

    def keep(name, tensor):
        values[name] = tensor.detach().cpu().numpy().copy()

    def output_hook(name):
        return lambda module, args, output: keep(name, output)

    handles = []
    modules = dict(model.named_modules())

    def on(module_name, hook):
        handles.append(modules[module_name].register_forward_hook(hook))

    for part in ("word_embeddings", "token_type_embeddings", "position_embeddings"):
        on(f"embeddings.{part}", output_hook(f"embeddings.{part}"))
    handles.append(
        modules["embeddings.LayerNorm"].register_forward_pre_hook(lambda module, args: keep("embeddings.sum", args[0]))
    )
    on("embeddings.LayerNorm", output_hook("embeddings.LayerNorm"))

    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            on(p + f"attention.self.{proj}", output_hook(p + f"attention.self.{proj}"))
        on(p + "attention.self", _self_attention_hook(p, keep, values, torch))
        for step in ("attention.output.dense", "attention.output.LayerNorm", "intermediate.dense"):
            on(p + step, output_hook(p + step))
        on(p + "intermediate", output_hook(p + "intermediate.gelu"))  # dense, then the activation
        on(p + "output.dense", output_hook(p + "output.dense"))
        on(p + "output.LayerNorm", output_hook(p + "output.LayerNorm"))
    if model.pooler is not None:  # a masked-LM file has none
        on("pooler.dense", output_hook("pooler.dense"))
        on("pooler.activation", output_hook("pooler"))

    try:
        with torch.inference_mode():
            model(
                input_ids=torch.tensor(input_ids),  # copies: the caller's arrays stay untouched
                attention_mask=torch.tensor(attention_mask),
                token_type_ids=torch.tensor(token_type_ids),
                output_attentions=True,
            )
    finally:
        for h in handles:
            h.remove()

    meta = {
        "producer": f"transformers {transformers.__version__} (torch {torch.__version__}), eager attention",
        "backend": "torch",
        "dtype": dtype,
        "model_file": str(weights) if not isinstance(weights, weights_format.WeightsFile) else "",
        "source_file": transformers.models.bert.modeling_bert.__file__,
        "patched": [],
        "inputs": {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids},
    }
    return Trace(values, meta)


def _self_attention_hook(p, keep, values, torch):
    """Hook on BertSelfAttention: scores recomputed as eager_attention_forward does; probs, context read."""

    def hook(module, args, output):
        context, probs = output  # [B, T, H] (heads merged by transformers), [B, A, T, T]
        q = torch.from_numpy(values[p + "attention.self.query"])  # [B, T, H]
        k = torch.from_numpy(values[p + "attention.self.key"])  # [B, T, H]
        hidden_shape = (*q.shape[:-1], -1, module.attention_head_size)
        q = q.view(*hidden_shape).transpose(1, 2)  # [B, A, T, D], as BertSelfAttention.forward
        k = k.view(*hidden_shape).transpose(1, 2)  # [B, A, T, D]
        keep(p + "attention.self.scores", torch.matmul(q, k.transpose(2, 3)) * module.scaling)  # [B, A, T, T]
        keep(p + "attention.self.probs", probs)
        keep(p + "attention.self.context", context)

    return hook
