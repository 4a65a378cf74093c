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

__all__ = ["torch_model", "trace", "trace_grads", "hf_config", "TORCH_HEAD_CLASSES"]

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
        "hidden_dropout_prob": c.hidden_dropout_prob, "attention_probs_dropout_prob": c.attention_probs_dropout_prob,
        "classifier_dropout": c.classifier_dropout,
        **overrides,
    })


# minibert head name -> the transformers class with that head
TORCH_HEAD_CLASSES = {
    "masked-lm": "BertForMaskedLM",
    "next-sentence": "BertForNextSentencePrediction",
    "classification": "BertForSequenceClassification",
    "pretraining": "BertForPreTraining",
}


def torch_model(weights, dtype="float32", head=None):
    """A transformers ``BertModel`` (eager attention, eval mode) holding a .h5 file's tensors.

    ``weights``: a path to a minibert .h5 file, or a ``minibert.weights.WeightsFile``.
    ``head``: None for ``BertModel``, or a minibert head name for the ``BertFor*`` model with
    that head (``TORCH_HEAD_CLASSES``); its encoder tensors are the file's under ``bert.``.
    """
    torch, transformers = _import_torch()
    if dtype not in TORCH_DTYPES:
        raise MinibertError(
            f"dtype {dtype!r} is not supported by the reference", f"use one of {', '.join(TORCH_DTYPES)}"
        )
    w = weights if isinstance(weights, weights_format.WeightsFile) else weights_format.load(weights)
    config = hf_config(w.config)
    config._attn_implementation = "eager"  # SDPA returns no attention probabilities
    if head is None:
        pooler = weights_format.has_pooler(w.tensors)  # a masked-LM file has none
        model = transformers.BertModel(config, add_pooling_layer=pooler)
        encoder_names = set(model.state_dict())
        state = {n: torch.from_numpy(np.ascontiguousarray(t)) for n, t in w.tensors.items() if n in encoder_names}
        model.load_state_dict(state, strict=True)  # every encoder tensor must come from the file
    else:
        model = _torch_head_model(transformers, torch, config, w, head)
    model = model.double() if dtype == "float64" else model.float()
    return model.eval()


def _torch_head_model(transformers, torch, hf_config, w, head):
    """A ``BertFor*`` model holding the file's tensors: encoder under ``bert.``, the head's as named."""
    if head not in TORCH_HEAD_CLASSES:
        raise MinibertError(f"unknown head {head!r}", f"use one of {', '.join(TORCH_HEAD_CLASSES)}")
    if head == "classification":
        hf_config.num_labels = w.config.num_labels
        hf_config.id2label = dict(w.config.id2label)
        hf_config.label2id = {v: k for k, v in w.config.id2label.items()}
    if "cls.predictions.decoder.weight" in w.tensors:  # the file stores an untied decoder
        hf_config.tie_word_embeddings = False
    model = getattr(transformers, TORCH_HEAD_CLASSES[head])(hf_config)  # a tied decoder shares the word table
    own = model.state_dict()
    state = {}
    for name, t in w.tensors.items():
        key = name if name.startswith(("cls.", "classifier.")) else "bert." + name
        if key in own:  # a file may hold more (e.g. the pooler, for a masked-LM model)
            state[key] = torch.from_numpy(np.ascontiguousarray(t))
    missing, _ = model.load_state_dict(state, strict=False)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}  # tied to tensors the file holds
    untouched = [m for m in missing if m not in tied]
    if untouched:
        raise MinibertError(f"the file has no tensor for {', '.join(untouched)} of {TORCH_HEAD_CLASSES[head]}",
                            "convert a checkpoint holding that head")
    return model


def _recorder():
    """A dict of recorded values and ``keep(name, tensor)``, which stores a NumPy copy in it."""
    values = {}

    def keep(name, tensor):
        values[name] = tensor.detach().cpu().numpy().copy()

    return values, keep


def trace(weights, input_ids, attention_mask=None, token_type_ids=None, dtype="float32", model=None):
    """Run transformers' BertModel on the inputs and return a ``Trace`` named like minibert's.

    ``weights``: a .h5 path or WeightsFile (ignored when ``model``, a ready ``torch_model``, is
    given). Inputs are checked with the same rules as ``minibert.BertModel``.
    """
    torch, transformers = _import_torch()
    model, config, (input_ids, attention_mask, token_type_ids) = _model_and_inputs(
        weights, model, dtype, None, input_ids, attention_mask, token_type_ids)

    values, keep = _recorder()  # name -> NumPy copy of a tensor

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

    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    return Trace(values, _meta(weights, dtype, inputs, "eager attention"))


def _model_and_inputs(weights, model, dtype, head, input_ids, attention_mask, token_type_ids):
    """The torch model (``torch_model`` of the file unless ``model`` is given), its minibert
    config, and the inputs checked with minibert's rules (``inputs.check_inputs``)."""
    if dtype not in TORCH_DTYPES:
        raise MinibertError(
            f"dtype {dtype!r} is not supported by the reference", f"use one of {', '.join(TORCH_DTYPES)}"
        )
    if model is None:
        w = weights if isinstance(weights, weights_format.WeightsFile) else weights_format.load(weights)
        model = torch_model(w, dtype, head=head)
        config = w.config
    else:
        config = BertConfig.from_dict(model.config.to_dict())
    return model, config, check_inputs(config, input_ids, attention_mask, token_type_ids)


def _meta(weights, dtype, inputs, how, **extra):
    """A reference trace's metadata: what produced it, from which file, on which inputs."""
    torch, transformers = _import_torch()
    return {
        "producer": f"transformers {transformers.__version__} (torch {torch.__version__}), {how}",
        **extra,
        "backend": "torch",
        "dtype": dtype,
        "model_file": str(weights) if not isinstance(weights, weights_format.WeightsFile) else "",
        "source_file": transformers.models.bert.modeling_bert.__file__,
        "patched": [],
        "inputs": inputs,
    }


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


def trace_grads(weights, input_ids, attention_mask=None, token_type_ids=None, head="classification",
                labels=None, next_sentence_label=None, dtype="float32", model=None):
    """PyTorch autograd's side of ``minibert.train.trace_grads``: d loss / d value at every named
    step and d loss / d parameter, named as minibert names them, in the order autograd computed them.

    Builds the transformers ``BertFor*`` model of ``head`` from the .h5 file (or uses ``model``,
    a ready ``torch_model(..., head=head)``), runs it in eval mode (no dropout) with the labels,
    and calls ``loss.backward()``. Step gradients are read by tensor hooks on the modules'
    outputs; ``attention.self.scores`` (no module of its own) by a hook on the softmax's autograd
    node, whose input gradient is d loss / d (scores + mask) = d loss / d scores; parameter
    gradients by post-accumulate-grad hooks, once complete (the tied decoder's included).
    ``meta["loss"]`` is transformers' ``outputs.loss``.
    """
    torch, _ = _import_torch()
    model, config, (input_ids, attention_mask, token_type_ids) = _model_and_inputs(
        weights, model, dtype, head, input_ids, attention_mask, token_type_ids)

    values, keep = _recorder()  # name -> NumPy copy of a gradient

    def on_output_grad(name, index=None):  # forward hook: hook the gradient of the module's output
        def hook(module, args, output):
            tensor = output if index is None else output[index]
            tensor.register_hook(lambda grad: keep(name, grad))  # None: the output is unchanged
        return hook

    def on_softmax_input_grad(name):  # forward hook on BertSelfAttention: the softmax node's input gradient
        def hook(module, args, output):
            node = output[1].grad_fn  # eval mode: the attention probabilities come straight from softmax
            assert "Softmax" in type(node).__name__, type(node).__name__
            node.register_hook(lambda grad_inputs, grad_outputs: keep(name, grad_inputs[0]))
        return hook

    def on_param_grad(name):  # post-accumulate hook: the parameter's gradient, complete
        return lambda param: keep(name, param.grad)

    modules = dict(model.named_modules())
    prefix = "" if head is None else "bert."
    steps = [("embeddings." + part, "embeddings." + part)  # (module name without prefix, step name)
             for part in ("word_embeddings", "token_type_embeddings", "position_embeddings", "LayerNorm")]
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        steps += [(p + step, p + step) for step in (
            "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
            "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")]
        steps.append((p + "intermediate", p + "intermediate.gelu"))  # dense, then the activation
    steps = [(prefix + module, name) for module, name in steps]
    if prefix + "pooler" in modules:
        steps += [(prefix + "pooler.dense", "pooler.dense"), (prefix + "pooler.activation", "pooler")]
    head_steps = ["cls.predictions.transform.dense", "cls.predictions.transform.transform_act_fn",
                  "cls.predictions.transform.LayerNorm", "cls.predictions", "cls.seq_relationship", "classifier"]
    steps += [(name, name) for name in head_steps if name in modules]

    handles = [modules[m].register_forward_hook(on_output_grad(name)) for m, name in steps]
    def on_sum(module, args):  # pre-hook: the LayerNorm's input is the sum of the embeddings
        args[0].register_hook(lambda grad: keep("embeddings.sum", grad))  # returns None: args unchanged

    handles.append(modules[prefix + "embeddings.LayerNorm"].register_forward_pre_hook(on_sum))
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}.attention.self"
        handles.append(modules[prefix + p].register_forward_hook(on_output_grad(p + ".context", index=0)))
        handles.append(modules[prefix + p].register_forward_hook(on_output_grad(p + ".probs", index=1)))
        handles.append(modules[prefix + p].register_forward_hook(on_softmax_input_grad(p + ".scores")))
    for name, param in model.named_parameters():
        param.grad = None
        handles.append(param.register_post_accumulate_grad_hook(on_param_grad(name.removeprefix("bert."))))

    kwargs = dict(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask),
                  token_type_ids=torch.tensor(token_type_ids))
    if labels is not None:
        kwargs["labels"] = torch.as_tensor(np.asarray(labels))
    if next_sentence_label is not None:
        kwargs["next_sentence_label"] = torch.as_tensor(np.asarray(next_sentence_label))
    try:
        with torch.enable_grad():
            out = model(**kwargs)
            if out.loss is None:
                raise MinibertError(f"{type(model).__name__} computed no loss",
                                    "pass labels (and next_sentence_label for pretraining)")
            out.loss.backward()
    finally:
        for h in handles:
            h.remove()

    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    meta = _meta(weights, dtype, inputs, "autograd, eager attention", kind="gradients", head=head, loss=out.loss.item())
    return Trace(values, meta)
