"""The ``minibert`` command: thin verbs that parse arguments, call the library and print.

A ``MinibertError`` is printed as ``error: ...`` with its fix hint, without a traceback,
and the command exits with status 1.
"""

import argparse
import json
import os
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from . import corpus, distributed, reference, weights
from .api import load
from .compare import compare
from .config import SUPPORTED_ACTIVATIONS, BertConfig
from .convert import convert
from .errors import InputError, MinibertError, WeightsError
from .export import export
from .fit import Settings, finetune, pretrain
from .heads import classify, fill_mask, mean_pooling, predict_each_position, sentence_embeddings
from .hooks import hook_points
from .inputs import BACKENDS, DEFAULT_BACKEND, DTYPES
from .plot import plot_attention
from .search import search
from .tokenizer import Tokenizer, encode_texts, read_text_file
from .trace import TRANSFORMERLENS_ALIASES
from .version import __version__
from .view import view


def cmd_convert(args):
    do_lower_case = {None: None, "uncased": True, "cased": False}[args.case]
    path = convert(args.src, args.dest, config=args.config, do_lower_case=do_lower_case,
                   hidden_act=args.hidden_act, strict=args.strict, vocab=args.vocab)
    if args.verbose:
        print(f"wrote {path}")
        return cmd_inspect(argparse.Namespace(file=path, verify=False))
    w = weights.load(path, verify=False)
    c = w.config
    n_params = sum(int(np.prod(t.shape)) for t in w.tensors.values())
    print(
        f"wrote {path}: {len(w.tensors)} tensors ({n_params:,} values, verified), "
        f"L={c.num_hidden_layers} H={c.hidden_size} "
        f"A={c.num_attention_heads} I={c.intermediate_size}, vocabulary {len(w.vocab)} tokens, "
        f"heads: {', '.join(w.heads) if w.heads else 'none'} (--verbose or `minibert inspect` for the table)"
    )
    return 0


def cmd_inspect(args):
    w = weights.load(args.file, verify=args.verify)
    print(f"{args.file}: minibert weights, format version {w.format_version}")
    print(f"source: {w.source}")
    for name, digest in w.source_sha256.items():
        print(f"  sha256 {name}: {digest}")
    print("config:")
    for key, value in w.config.to_dict().items():
        print(f"  {key}: {value}")
    print(f"vocabulary: {len(w.vocab)} tokens, do_lower_case={w.do_lower_case}")
    print(f"heads: {', '.join(w.heads) if w.heads else '(none: encoder only)'}")
    n_params = sum(int(np.prod(t.shape)) for t in w.tensors.values())
    width = max(len(n) for n in w.tensors)
    print(f"tensors: {len(w.tensors)} ({n_params:,} values)")
    print(f"  {'name':<{width}}  {'shape':<14} dtype")
    for name, t in sorted(w.tensors.items(), key=lambda item: natural_key(item[0])):
        print(f"  {name:<{width}}  {str(tuple(t.shape)):<14} {t.dtype}")
    if args.verify:
        print(f"verified: all {len(w.tensors)} tensors match their SHA-256")
    return 0


def read_text_arg(text, file):
    """The text to encode: the positional argument, or the contents of --file (UTF-8)."""
    if file is not None:
        return read_text_file(file).rstrip("\n")
    if text is None:
        raise InputError("no text given", "pass the text as an argument, or --file PATH")
    return text


def check_output_path(path, option):
    """Refuse, before any work, an output path that is a directory or lies in a missing directory."""
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(
            f"{option} {path}: is a directory", f"give a file name, e.g. {option} {os.path.join(path, 'out')}"
        )
    if not os.path.isdir(parent):
        raise InputError(
            f"{option} {path}: the directory {parent} does not exist",
            f"create it first (mkdir -p {parent}) or choose another path",
        )


def cmd_encode(args):
    """Tokenize a text (and optional pair), run the encoder, print tokens, ids and outputs."""
    if args.input is not None:
        return cmd_encode_corpus(args)
    check_output_path(args.json, "--json")
    text = read_text_arg(args.text, args.file)
    model = load(args.model, dtype=args.dtype, backend=args.backend)
    tokenizer = Tokenizer.from_file(args.model)
    batch, dropped = encode_texts(
        tokenizer,
        [text],
        None if args.pair is None else [args.pair],
        model.config.max_position_embeddings,
        args.truncate,
    )
    enc = {k: v[0].tolist() for k, v in batch.items()}
    if dropped:
        print(f"truncated to {model.config.max_position_embeddings} tokens: {dropped} tokens dropped", file=sys.stderr)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    batch = {k: np.array([v]) for k, v in enc.items()}  # [1, T]
    out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mean_pooled = mean_pooling(out.last_hidden_state, batch["attention_mask"])  # [1, H]: the sentence embedding
    print(f"tokens ({len(tokens)}): {' '.join(tokens)}")
    print(f"input_ids: {' '.join(map(str, enc['input_ids']))}")
    print(f"token_type_ids: {' '.join(map(str, enc['token_type_ids']))}")
    for name, value in (
        ("last_hidden_state", out.last_hidden_state),
        ("pooler_output", out.pooler_output),
        ("mean-pooled embedding", mean_pooled),
    ):
        if value is None:  # a masked-LM file has no pooler
            continue
        print(
            f"{name}: shape {list(value.shape)}, L2 norm {np.linalg.norm(value):.6f}, "
            f"first values {np.array2string(value.reshape(-1)[:4], precision=4)}"
        )
    if args.json:
        record = {
            "model": str(args.model),
            "text": text,
            "pair": args.pair,
            "dtype": args.dtype,
            "tokens": tokens,
            **{k: list(map(int, v)) for k, v in enc.items()},
            "last_hidden_state": out.last_hidden_state[0].tolist(),  # [T, H]
            "pooler_output": None if out.pooler_output is None else out.pooler_output[0].tolist(),  # [H]
            "mean_pooled": mean_pooled[0].tolist(),  # [H]
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f)
        print(f"wrote {args.json}")
    return 0


def cmd_encode_corpus(args):
    """`encode --input FILE --out OUT.h5`: every line of FILE to one row of sentence embeddings."""
    if args.text is not None or args.file is not None or args.pair is not None or args.json is not None:
        raise MinibertError("--input encodes a whole file: a TEXT, --file, --pair or --json cannot go with it",
                            "drop them, or drop --input to encode one text")
    if args.out is None:
        raise MinibertError("--input needs --out, the HDF5 file to write", "add e.g. --out embeddings.h5")
    options = dict(resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, batch_size=args.batch_size,
                   max_length=args.max_length, truncate=args.truncate, pooling=args.pooling, field=args.field,
                   errors=args.errors, backend=args.backend, dtype=args.dtype)
    try:
        if args.dask:
            report = distributed.encode_corpus(args.model, args.input, args.out, dask=args.dask, **options)
        else:
            report = corpus.encode_corpus(args.model, args.input, args.out, **options)
    except KeyboardInterrupt:
        print(f"interrupted: the windows finished so far are kept in {args.out}.parts; "
              "run the same command with --resume to continue", file=sys.stderr)
        raise
    if report.resumed_windows < 0:
        print(f"{report.out} is already complete ({report.rows} rows): nothing to do")
        return 0
    print(f"wrote {report.out}: {report.rows} rows from {report.line_count} lines ({report.empty} empty, "
          f"{report.skipped} skipped, {report.truncated} truncated), {report.tokens} tokens, "
          f"{report.seconds:.1f} s, {report.lines_per_second:,.0f} lines/s")
    return 0


def cmd_search(args):
    hits = search(args.embeddings, args.query, top_k=args.top_k, model=args.model, truncate=args.truncate)
    for h in hits:
        text = "(the input file changed or is missing: line not shown)" if h.text is None else h.text
        print(f"{h.score:.4f}  line {h.line_number}: {text[:args.width]}{'...' if len(text) > args.width else ''}")
    return 0


def model_inputs(args):
    """input_ids, attention_mask, token_type_ids from TEXT [--pair TEXT] or --ids 101,2054,102."""
    if args.ids:
        try:
            ids = [int(part) for part in args.ids.split(",")]
        except ValueError:
            raise MinibertError(
                f"--ids {args.ids!r} is not a comma-separated list of integers", "write e.g. --ids 101,7592,102"
            ) from None
        return np.array([ids]), None, None
    if args.text is None:
        raise MinibertError("no input: give a TEXT or --ids", 'e.g. minibert parity model.h5 "Hello world"')
    max_length = weights.read_config(args.file).max_position_embeddings
    batch, dropped = encode_texts(
        Tokenizer.from_file(args.file),
        [args.text],
        None if args.pair is None else [args.pair],
        max_length,
        args.truncate,
    )  # [1, T] each
    if dropped:
        print(f"truncated to {max_length} tokens: {dropped} tokens dropped", file=sys.stderr)
    return batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]


def cmd_parity(args):
    ids, mask, types = model_inputs(args)
    ours = load(args.file, dtype=args.dtype, backend=args.backend).trace(ids, mask, types)
    ref = reference.trace(args.file, ids, mask, types, dtype=args.dtype)
    result = compare(ours, ref, dtype=args.dtype)
    print(
        f"{args.file}: minibert ({args.backend}) against {ref.meta['producer']}, {args.dtype}, "
        f"input shape {tuple(ours.meta['inputs']['input_ids'].shape)}"
    )
    print(result.table())
    return 0 if result.passed else 1


def cmd_trace(args):
    check_output_path(args.out, "--out")
    if args.plot is not None and os.path.exists(args.plot) and not os.path.isdir(args.plot):
        raise MinibertError(
            f"--plot {args.plot}: is a file; --plot takes a directory for the PNG files",
            "give a directory name (it is created)",
        )
    ids, mask, types = model_inputs(args)
    model = load(args.file, dtype=args.dtype, backend=args.backend)
    t = model.trace(ids, mask, types, only=args.only or None)
    print(t.summary())
    if args.out:
        print(f"wrote {t.save(args.out)} ({len(t)} steps)")
    if args.plot:
        try:
            vocab, _ = weights.read_vocab(args.file)
            tokens = [vocab[i] for i in t.meta["inputs"]["input_ids"][0]]
        except WeightsError:  # a file without vocabulary: label the axes with the ids
            tokens = [str(i) for i in t.meta["inputs"]["input_ids"][0]]
        for path in plot_attention(t, args.plot, tokens=tokens):
            print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------
# `minibert hooks`: the hook points, and the doc tables generated from them
# ---------------------------------------------------------------------------------------


def hook_table(config=None):
    """The markdown table of hook points for docs/debugging.md (layer 0 shown as {i})."""
    config = config or BertConfig.preset("bert-tiny")
    rows, done = [], set()
    for name, shape in hook_points(config):
        generic = re.sub(r"^encoder\.layer\.\d+\.", "encoder.layer.{i}.", name)
        if generic not in done:
            done.add(generic)
            rows.append(f"| `{generic}` | `{shape}` | {_STEP_NOTES.get(generic, '')} |")
    return "\n".join(["| hook point | shape | value |", "|---|---|---|"] + rows)


_STEP_NOTES = {
    "embeddings.word_embeddings": "one row of the word table per token",
    "embeddings.token_type_embeddings": "segment A/B rows",
    "embeddings.position_embeddings": "rows 0..T-1, shared by the batch",
    "embeddings.sum": "word + token type + position (transformers' order)",
    "embeddings.LayerNorm": "the embeddings: input of layer 0",
    "encoder.layer.{i}.attention.self.query": "Q = x Wq^T + bq (heads not yet split)",
    "encoder.layer.{i}.attention.self.key": "K",
    "encoder.layer.{i}.attention.self.value": "V",
    "encoder.layer.{i}.attention.self.scores": "Q K^T / sqrt(D), before the padding mask",
    "encoder.layer.{i}.attention.self.probs": "softmax(scores + mask) over keys",
    "encoder.layer.{i}.attention.self.context": "probs @ V, heads merged",
    "encoder.layer.{i}.attention.output.dense": "output projection",
    "encoder.layer.{i}.attention.output.LayerNorm": "LayerNorm(dense + x): the attention block's output",
    "encoder.layer.{i}.intermediate.dense": "widen to I",
    "encoder.layer.{i}.intermediate.gelu": "the activation config.hidden_act names: exact (erf) GELU for BERT",
    "encoder.layer.{i}.output.dense": "back to H",
    "encoder.layer.{i}.output.LayerNorm": (
        "LayerNorm(dense + attention output): the layer's output (hidden_states[i+1])"
    ),
    "pooler.dense": "dense on the [CLS] token",
    "pooler": "tanh: pooler_output",
}

DOC_BEGIN = "<!-- hook table: generated by `python -m minibert hooks --write-doc docs/debugging.md`; do not edit -->"
DOC_END = "<!-- end of hook table -->"
ALIAS_BEGIN = "<!-- alias table: generated by `python -m minibert hooks --write-doc docs/debugging.md`; do not edit -->"
ALIAS_END = "<!-- end of alias table -->"


def _replace_between(text, begin, end, body, path):
    if begin not in text or end not in text:
        raise MinibertError(f"{path}: the generated-table markers are missing", f"add the lines {begin} and {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def write_hook_table(doc_path):
    """Rewrite the generated hook table and alias table of a markdown file (docs/debugging.md)."""
    path = Path(doc_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else (e.strerror or type(e).__name__).lower()
        raise MinibertError(
            f"{path}: cannot read it ({why})",
            "pass the markdown file that holds the generated tables (docs/debugging.md)",
        ) from None
    text = _replace_between(text, DOC_BEGIN, DOC_END, hook_table(), path)
    text = _replace_between(text, ALIAS_BEGIN, ALIAS_END, alias_table(), path)
    path.write_text(text, encoding="utf-8")
    return path


def alias_table():
    """The markdown table of TransformerLens aliases, for docs/debugging.md."""
    rows = [f"| `{tl}` | `{hf}` | {note} |" for tl, (hf, note) in TRANSFORMERLENS_ALIASES.items()]
    return "\n".join(["| TransformerLens | minibert | difference |", "|---|---|---|"] + rows)


def cmd_hooks(args):
    if args.write_doc:
        print(f"wrote the hook table into {write_hook_table(args.write_doc)}")
        return 0
    if args.file is None:
        for name, shape in hook_points(BertConfig.preset(args.preset)):
            print(f"{name:<48} {shape}")
        return 0
    config = weights.read_config(args.file)  # the file's own shapes: B and T stay letters (they come with the input)
    pooler = weights.has_pooler(weights.read_tensor_names(args.file))
    sizes = {
        "A": config.num_attention_heads,
        "D": config.head_size,
        "H": config.hidden_size,
        "I": config.intermediate_size,
    }
    for name, shape in hook_points(config):
        if name.startswith("pooler") and not pooler:  # a masked-LM file has no pooler
            continue
        concrete = "[" + ", ".join(str(sizes.get(axis, axis)) for axis in shape.strip("[]").split(", ")) + "]"
        print(f"{name:<48} {concrete}")
    return 0


def cmd_fill_mask(args):
    model = load(args.model, dtype=args.dtype, backend=args.backend, head="masked-lm")
    tokenizer = Tokenizer.from_file(args.model)
    if args.mask_each:
        return fill_mask_each_position(model, tokenizer, args.mask_each, args.residues)
    if args.text is None:
        raise MinibertError("no text given", "write the text with [MASK] where a token should be predicted, "
                                              "or use --mask-each FILE")
    encode_texts(tokenizer, [args.text], None, model.config.max_position_embeddings, args.truncate)  # the length rule
    for i, candidates in enumerate(
        fill_mask(model, tokenizer, args.text, top_k=args.top_k, truncation=args.truncate), start=1
    ):
        print(f"[MASK] {i}:")
        for token, p in candidates:
            print(f"  {p:8.4f}  {token}")
    return 0


def fill_mask_each_position(model, tokenizer, path, residues):
    """Top-1 accuracy of predicting each token of each line of ``path`` with that token masked,
    against always guessing the most frequent token of the file."""
    lines = [line.strip() for line in read_text_file(path).splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise MinibertError(f"{path}: no text lines (lines starting with # are comments)",
                            "put one text (or sequence) per line")
    results = []
    for line in lines:
        text = " ".join(line) if residues else line  # one token per residue: "E V Q L ..."
        tokens, predicted = predict_each_position(model, tokenizer, text)
        results.append((line, tokens, predicted))
    counts = Counter(t for _, tokens, _ in results for t in tokens)
    frequent, _ = counts.most_common(1)[0]
    total = sum(counts.values())
    for i, (line, tokens, predicted) in enumerate(results, start=1):
        right = sum(t == p for t, p in zip(tokens, predicted))
        n, base = len(tokens), tokens.count(frequent)
        print(f"{i}. {line[:24]}{'...' if len(line) > 24 else ''} ({n} tokens): top-1 {right}/{n} = {right / n:.1%}, "
              f"baseline {base}/{n} = {base / n:.1%}")
    right = sum(t == p for _, tokens, predicted in results for t, p in zip(tokens, predicted))
    print(f"all {len(results)} texts, {total} positions, each masked alone: top-1 accuracy {right}/{total} = "
          f"{right / total:.1%}; baseline (always {frequent!r}, the most frequent token of the file): "
          f"{counts[frequent]}/{total} = {counts[frequent] / total:.1%}")
    return 0


def cmd_classify(args):
    model = load(args.model, dtype=args.dtype, backend=args.backend, head="classification")
    tokenizer = Tokenizer.from_file(args.model)
    encode_texts(
        tokenizer,
        [args.text],
        None if args.pair is None else [args.pair],
        model.config.max_position_embeddings,
        args.truncate,
    )  # the length rule
    scores = classify(model, tokenizer, args.text, args.pair, truncation=args.truncate)
    width = max(len(label) for label, _ in scores)
    for label, p in sorted(scores, key=lambda item: -item[1]):
        print(f"{label:<{width}}  {p:.4f}")
    return 0


def cmd_similarity(args):
    model = load(args.model, dtype=args.dtype, backend=args.backend)  # the encoder: any file, with or without heads
    tokenizer = Tokenizer.from_file(args.model)
    batch, _ = encode_texts(
        tokenizer, [args.text_a, args.text_b], None, model.config.max_position_embeddings, args.truncate
    )
    a, b = sentence_embeddings(model, batch)  # [H], [H], unit length
    print(f"cosine similarity: {float(a @ b):.4f}")
    return 0


def cmd_view(args):
    """Write the interactive attention page (head view, model view, step view) of one input."""
    text = read_text_arg(args.text, args.file)
    model = load(args.model, dtype=args.dtype, backend=args.backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = view(model, text, pair=args.pair, truncate=args.truncate, layers=args.layers,
                    tokenizer=Tokenizer.from_file(args.model), threshold=args.threshold, max_mb=args.max_mb)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    path = page.save(args.out)
    d = page.data
    layers = " ".join(str(a["layer"]) for a in d["attention"])
    print(f"wrote {path} ({page.nbytes / 1e6:.2f} MB): {len(d['tokens'])} tokens, "
          f"layers {layers} x {d['num_heads']} heads, {len(d['steps'])} steps; open it in a browser")
    return 0


def training_settings(args):
    """fit.Settings from the options shared by finetune and pretrain."""
    return Settings(epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                    warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
                    max_length=args.max_length, seed=args.seed, dropout=not args.no_dropout, save_steps=args.save_steps,
                    eval_steps=args.eval_steps, max_minutes=args.max_minutes)


def cmd_finetune(args):
    """Fine-tune a classifier on a .jsonl/.tsv file; checkpoints and loss.png in --out."""
    labels = [name.strip() for name in args.labels.split(",")] if args.labels else None
    progress = finetune(args.model, args.train, args.out, task=args.task, dev_path=args.dev, labels=labels,
                        settings=training_settings(args), resume=args.resume, dtype=args.dtype, backend=args.backend)
    return 130 if progress.interrupted else 0


def cmd_pretrain(args):
    """Pretrain a preset-shaped BERT from scratch (masked-LM + next-sentence) on a corpus."""
    progress = pretrain(args.corpus, args.vocab, args.out, preset=args.preset, dev_fraction=args.dev_fraction,
                        settings=training_settings(args), resume=args.resume, dtype=args.dtype, backend=args.backend)
    return 130 if progress.interrupted else 0


def cmd_export(args):
    out = export(args.model, args.out_dir)
    print(f"wrote {out}/config.json, vocab.txt, tokenizer_config.json, model.safetensors")
    return 0


def natural_key(name):
    """Sort key putting encoder.layer.2 before encoder.layer.10."""
    return [int(part) if part.isdigit() else part for part in name.split(".")]


def add_model_options(p):
    """--dtype, --backend and --truncate, the same for every verb that runs the model on text."""
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--backend", choices=sorted(BACKENDS), default=DEFAULT_BACKEND)
    p.add_argument(
        "--truncate", action="store_true", help="cut a text longer than the model's positions (default: refuse it)"
    )


def add_verb(sub, name, helptext, func):
    """A `minibert NAME` subcommand that runs ``func(args)``."""
    p = sub.add_parser(name, help=helptext)
    p.set_defaults(func=func)
    return p


def add_text_arguments(p, text_help):
    """MODEL.h5, then TEXT (or --file PATH) and --pair: the input of the verbs that read one text."""
    p.add_argument("model", help="a converted minibert .h5 file")
    p.add_argument("text", nargs="?", help=f"{text_help} (or use --file)")
    p.add_argument("--pair", help="a second text (segment B), as for NLI or next-sentence")
    p.add_argument("--file", help="read the text from this UTF-8 file instead")


def build_parser():
    parser = argparse.ArgumentParser(prog="minibert", description="BERT in NumPy, checked against PyTorch.")
    parser.add_argument("--version", action="version", version=f"minibert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = add_verb(sub, "convert", "convert a Hugging Face or Google TensorFlow checkpoint to a minibert .h5 file",
                 cmd_convert)
    p.add_argument("src", help="model directory (sharded too), .safetensors/.bin file, "
                               "hub id (e.g. prajjwal1/bert-tiny), "
                               "or Google's TensorFlow release: its .zip, its folder, or a *.ckpt prefix")
    p.add_argument("dest", help="output .h5 path")
    p.add_argument("--config", help="config.json (bert_config.json), when SRC is a single checkpoint file "
                                    "or *.ckpt prefix")
    p.add_argument("--case", choices=["uncased", "cased"], help="override the tokenizer's lower-casing")
    p.add_argument("--hidden-act", choices=list(SUPPORTED_ACTIVATIONS),
                   help="override the config's activation; a TensorFlow "
                   "checkpoint's \"gelu\" defaults to gelu_new, the tanh GELU Google's code computes")
    p.add_argument("--strict", action="store_true",
                   help="refuse a checkpoint with tensors that are not BERT's instead of skipping them")
    p.add_argument("--vocab", help="vocab.txt, when it is not beside the checkpoint")
    p.add_argument("--verbose", action="store_true", help="print the config and the tensor table after converting")

    p = add_verb(sub, "encode", "tokenize a text, run the encoder, print tokens, ids and outputs", cmd_encode)
    add_text_arguments(p, "the text to encode")
    p.add_argument("--json", metavar="PATH", help="write tokens, ids and the embeddings to this JSON file")
    add_model_options(p)
    g = p.add_argument_group("a whole corpus (--input): one row of sentence embeddings per line, docs/corpus.md")
    g.add_argument("--input", metavar="CORPUS", help="a text file (one text per line) or .jsonl (one object per line)")
    g.add_argument("--out", metavar="OUT.h5", help="the embeddings file to write")
    g.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    g.add_argument("--max-length", type=int, help="tokens per text, [CLS] and [SEP] included (default: the model's)")
    g.add_argument("--pooling", choices=["mean", "cls"], default="mean",
                   help="mean of the tokens (as sentence-transformers) or [CLS]; then L2-normalised")
    g.add_argument("--field", help="the JSONL field holding the text (default: text)")
    g.add_argument("--errors", choices=["fail", "skip"], default="fail",
                   help="a line that is not UTF-8 (or a bad JSONL row): stop, or skip it and list it")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished window")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output")
    g.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    g.add_argument("--dask", metavar="local:N|tcp://HOST:PORT",
                   help="run on a Dask cluster (needs minibert[dask]); see docs/scaling.md")

    p = add_verb(sub, "search", "the lines of an encoded corpus closest to a query (exact cosine top-k)", cmd_search)
    p.add_argument("embeddings", help="a file written by `minibert encode MODEL --input CORPUS --out FILE`")
    p.add_argument("query", help="the text to look for")
    p.add_argument("--top-k", type=int, default=10, help="how many lines to print (default 10)")
    p.add_argument("--model", help="the model file, if it moved since the corpus was encoded (checked by SHA-256)")
    p.add_argument("--truncate", action="store_true", help="cut a query longer than the corpus's max length")
    p.add_argument("--width", type=int, default=160, help="characters of each line to print (default 160)")

    p = add_verb(sub, "inspect", "print the config and tensor table of a .h5 file", cmd_inspect)
    p.add_argument("file")
    p.add_argument("--verify", action="store_true", help="check every tensor's SHA-256")

    p = add_verb(sub, "hooks", "list every hook point (step name and shape) of the forward pass", cmd_hooks)
    p.add_argument("file", nargs="?", help="minibert .h5 file (default: the --preset shape)")
    p.add_argument("--preset", default="bert-tiny", help="preset shape when no file is given")
    p.add_argument(
        "--write-doc", metavar="MD", help="rewrite the generated hook table in this markdown file (docs/debugging.md)"
    )

    for verb, helptext, func in (
        ("parity", "compare every hook point with transformers (PyTorch); exit 1 on the first divergence", cmd_parity),
        ("trace", "capture every named step of the forward pass; save it (--out), plot attention (--plot)", cmd_trace),
    ):
        p = add_verb(sub, verb, helptext, func)
        p.add_argument("file", help="minibert .h5 file")
        p.add_argument("text", nargs="?", help="input text (tokenized with the file's vocabulary)")
        p.add_argument("--pair", help="second segment of a text pair")
        p.add_argument("--ids", help="token ids instead of text, e.g. 101,7592,102")
        add_model_options(p)
        if verb == "trace":
            p.add_argument(
                "--only", action="append", help="glob of steps to keep (repeatable), e.g. 'encoder.layer.0.*'"
            )
            p.add_argument("--out", help="write the trace to this .h5 file")
            p.add_argument("--plot", metavar="DIR", help="write PNG heat maps of every layer's attention into DIR")

    helptext = "write an interactive attention page (head, model and step views) as one HTML file"
    p = add_verb(sub, "view", helptext, cmd_view)
    add_text_arguments(p, "the text to look at")
    p.add_argument("--layers", type=int, nargs="+", help="embed only these layers' attention (default: all)")
    p.add_argument("--out", default="view.html", help="the HTML file to write (default view.html)")
    p.add_argument("--threshold", type=float, default=0.02, help="head view: hide weights below this (default 0.02)")
    p.add_argument("--max-mb", type=float, default=25.0, help="refuse a page larger than this many MB (default 25)")
    add_model_options(p)

    p = add_verb(sub, "fill-mask", "the most likely tokens for each [MASK] (needs a masked-lm head)", cmd_fill_mask)
    p.add_argument("model", help="a minibert .h5 file with a masked-lm head")
    p.add_argument("text", nargs="?", help='text with one or more [MASK], e.g. "The capital of France is [MASK]."')
    p.add_argument("--top-k", type=int, default=5, help="how many tokens to list per [MASK] (default 5)")
    p.add_argument("--mask-each", metavar="FILE",
                   help="mask every token of every line of FILE alone, in turn; print the top-1 "
                        "accuracy against always guessing the most frequent token")
    p.add_argument("--residues", action="store_true",
                   help="with --mask-each: each line is a protein sequence, one token per letter")
    add_model_options(p)

    p = add_verb(sub, "classify", "label probabilities of a text or pair (needs a classification head)", cmd_classify)
    p.add_argument("model", help="a minibert .h5 file with a classification head")
    p.add_argument("text", help="the text (the premise, for a pair)")
    p.add_argument("--pair", help="the second text of a pair (the hypothesis)")
    add_model_options(p)

    p = add_verb(sub, "similarity", "cosine similarity of two texts' mean-pooled embeddings", cmd_similarity)
    p.add_argument("model", help="a minibert .h5 file (an encoder; e.g. all-MiniLM-L6-v2)")
    p.add_argument("text_a")
    p.add_argument("text_b")
    add_model_options(p)

    for verb, helptext, func in (
        ("finetune", "fine-tune a classifier on a .jsonl/.tsv file of labelled texts or pairs", cmd_finetune),
        ("pretrain", "pretrain a preset-shaped BERT from scratch (masked-LM + next-sentence)", cmd_pretrain),
    ):
        p = add_verb(sub, verb, helptext, func)
        if verb == "finetune":
            p.add_argument("model", help="a minibert .h5 file: the encoder to start from (e.g. all-MiniLM-L6-v2)")
            p.add_argument("--train", required=True, help=".jsonl or .tsv with text (text_pair) and label")
            p.add_argument("--dev", help="the same format; accuracy and loss after each epoch")
            p.add_argument("--task", choices=["classification", "pair-classification"], default="classification")
            p.add_argument("--labels", help="label names in id order, e.g. neg,pos (default: sorted from --train)")
            defaults = dict(lr=5e-5, warmup_ratio=0.1, batch_size=16, epochs=3.0, save_steps=500)
        else:
            p.add_argument("--corpus", required=True, help="UTF-8: a sentence per line, a blank line between documents")
            p.add_argument("--vocab", required=True, help="vocab.txt, or a minibert .h5 file whose vocabulary to use")
            p.add_argument("--preset", default="bert-tiny", help="bert-tiny, bert-mini, bert-small or bert-medium")
            p.add_argument("--dev-fraction", type=float, default=0.02, help="share of documents held out (the last)")
            defaults = dict(lr=1e-4, warmup_ratio=0.01, batch_size=32, epochs=1.0, save_steps=500)
        p.add_argument("--out", required=True, help="run directory: model.h5, trainer_state.h5, history.json, loss.png")
        p.add_argument("--epochs", type=float, default=defaults["epochs"])
        p.add_argument("--max-steps", type=int, help="optimiser steps in all (overrides --epochs)")
        p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
        p.add_argument("--lr", type=float, default=defaults["lr"], help="peak learning rate of AdamW")
        p.add_argument("--warmup-ratio", type=float, default=defaults["warmup_ratio"], help="share of steps of warm-up")
        p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's decoupled decay")
        p.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global gradient norm to this")
        p.add_argument("--max-length", type=int, default=128, help="truncate inputs to this many tokens")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--no-dropout", action="store_true", help="deterministic: no dropout")
        p.add_argument("--save-steps", type=int, default=defaults["save_steps"], help="checkpoint every N steps")
        p.add_argument("--eval-steps", type=int, help="dev metrics every N steps (default: after each epoch)")
        p.add_argument("--max-minutes", type=float, help="stop with a checkpoint after this many minutes")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
        p.add_argument("--backend", choices=sorted(BACKENDS), default=DEFAULT_BACKEND)

    p = add_verb(sub, "export", "write a Hugging Face directory (config.json, vocab.txt, safetensors)", cmd_export)
    p.add_argument("model", help="a minibert .h5 file")
    p.add_argument("out_dir", help="directory for transformers' from_pretrained")
    return parser


def numba_cache_error(exc):
    """A MinibertError when ``exc`` was raised while Numba read its on-disk cache, else None.

    A truncated ``.nbi``/``.nbc`` file makes every kernel call fail while unpickling; the fix is
    to delete the cache directory (Numba rebuilds it) or to run without the kernels.
    """
    tb, directory = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(os.path.join("numba", "core", "caching.py")):
            directory = directory or getattr(tb.tb_frame.f_locals.get("self"), "_cache_path", None)
            if directory is None:
                directory = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
                    os.path.dirname(os.path.abspath(__file__)), "__pycache__"
                )
        tb = tb.tb_next
    if directory is None:
        return None
    return MinibertError(
        f"Numba's on-disk cache of minibert's kernels is damaged ({type(exc).__name__}: {exc})",
        f"delete the cache files in {directory} (Numba rebuilds them on the next run), or use --backend numpy",
    )


def main(argv=None):
    import bdb

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except MinibertError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"fix: {e.hint}", file=sys.stderr)
        return 1
    except bdb.BdbQuit:  # `q` at a MINIBERT_BREAK stop: the user asked to stop
        print("stopped: quit from the debugger", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except Exception as e:  # only a damaged Numba cache is turned into an error here; anything else is a bug
        damaged = numba_cache_error(e)
        if damaged is None:
            raise
        print(f"error: {damaged.message}\nfix: {damaged.hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
