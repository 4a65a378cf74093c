"""The ``minibert`` command: thin verbs that parse arguments, call the library and print.

A ``MinibertError`` is printed as ``error: ...`` with its fix hint, without a traceback,
and the command exits with status 1.
"""

import argparse
import sys

import numpy as np

from . import __version__
from .errors import MinibertError


def cmd_convert(args):
    from .convert import convert

    do_lower_case = {None: None, "uncased": True, "cased": False}[args.case]
    path = convert(args.src, args.dest, config=args.config, do_lower_case=do_lower_case)
    print(f"wrote {path}")
    return cmd_inspect(argparse.Namespace(file=path, verify=False))


def cmd_inspect(args):
    from . import weights

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


def cmd_fill_mask(args):
    from .heads import fill_mask
    from .model import load
    from .tokenizer import Tokenizer

    model = load(args.model, head="masked-lm")
    tokenizer = Tokenizer.from_file(args.model)
    for i, candidates in enumerate(fill_mask(model, tokenizer, args.text, top_k=args.top_k), start=1):
        print(f"[MASK] {i}:")
        for token, p in candidates:
            print(f"  {p:8.4f}  {token}")
    return 0


def cmd_classify(args):
    from .heads import classify
    from .model import load
    from .tokenizer import Tokenizer

    model = load(args.model, head="classification")
    tokenizer = Tokenizer.from_file(args.model)
    scores = classify(model, tokenizer, args.text, args.pair)
    width = max(len(label) for label, _ in scores)
    for label, p in sorted(scores, key=lambda item: -item[1]):
        print(f"{label:<{width}}  {p:.4f}")
    return 0


def cmd_similarity(args):
    from .heads import sentence_embeddings
    from .model import load
    from .tokenizer import Tokenizer

    model = load(args.model)  # the encoder: any file, with or without heads
    tokenizer = Tokenizer.from_file(args.model)
    a, b = sentence_embeddings(model, tokenizer.encode_batch([args.text_a, args.text_b]))  # [H], [H], unit length
    print(f"cosine similarity: {float(a @ b):.4f}")
    return 0


def natural_key(name):
    """Sort key putting encoder.layer.2 before encoder.layer.10."""
    return [int(part) if part.isdigit() else part for part in name.split(".")]


def build_parser():
    parser = argparse.ArgumentParser(prog="minibert", description="BERT in NumPy, checked against PyTorch.")
    parser.add_argument("--version", action="version", version=f"minibert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="convert a Hugging Face checkpoint to a minibert .h5 file")
    p.add_argument("src", help="model directory, .safetensors/.bin file, or hub id (e.g. prajjwal1/bert-tiny)")
    p.add_argument("dest", help="output .h5 path")
    p.add_argument("--config", help="config.json, when SRC is a single checkpoint file")
    p.add_argument("--case", choices=["uncased", "cased"], help="override the tokenizer's lower-casing")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("inspect", help="print the config and tensor table of a .h5 file")
    p.add_argument("file")
    p.add_argument("--verify", action="store_true", help="check every tensor's SHA-256")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("fill-mask", help="the most likely tokens for each [MASK] (needs a masked-lm head)")
    p.add_argument("model", help="a minibert .h5 file with a masked-lm head")
    p.add_argument("text", help='text with one or more [MASK], e.g. "The capital of France is [MASK]."')
    p.add_argument("--top-k", type=int, default=5, help="how many tokens to list per [MASK] (default 5)")
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("classify", help="label probabilities of a text or pair (needs a classification head)")
    p.add_argument("model", help="a minibert .h5 file with a classification head")
    p.add_argument("text", help="the text (the premise, for a pair)")
    p.add_argument("--pair", help="the second text of a pair (the hypothesis)")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("similarity", help="cosine similarity of two texts' mean-pooled embeddings")
    p.add_argument("model", help="a minibert .h5 file (an encoder; e.g. all-MiniLM-L6-v2)")
    p.add_argument("text_a")
    p.add_argument("text_b")
    p.set_defaults(func=cmd_similarity)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except MinibertError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"fix: {e.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
