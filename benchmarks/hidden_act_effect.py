"""How much does the GELU variant change a model's outputs? (docs/formats.md quotes this.)

    python benchmarks/hidden_act_effect.py weights/all-MiniLM-L6-v2.h5
    python benchmarks/hidden_act_effect.py weights/antiberty.h5 --file docs/data/antibody_sequences.txt --residues

Runs the model as converted (its config's hidden_act) and again with each other activation of
the GELU family (``--as``), on the same inputs, float64, and prints the largest change of the
last hidden state, the smallest cosine between the two runs' mean-pooled sentence embeddings,
and, for a file with a masked-LM head, the largest change of the logits and how often the top-1
token stays the same. Google's TensorFlow BERT computes the tanh GELU ("gelu_new") under the
name "gelu"; transformers' "gelu" is the exact erf GELU: this measures what that mix-up costs.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import minibert  # noqa: E402
from minibert import ops  # noqa: E402
from minibert.heads import l2_normalize, mean_pooling  # noqa: E402

SENTENCES = [
    "The cat sat on the mat.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, I would watch it again.",
    "Stock markets fell sharply after the announcement of new tariffs on imported steel.",
    "She plays the violin in the city orchestra every Sunday.",
]


def run(path, batch, hidden_act, head):
    model = minibert.load(path, dtype="float64", head=head)
    model.config.hidden_act = hidden_act  # the forward pass reads it at every call
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a converted minibert .h5 file with a vocabulary")
    parser.add_argument("--file", dest="texts", help="texts, one per line (# comments); default: six English sentences")
    parser.add_argument("--residues", action="store_true", help="each line is a protein sequence: one token per letter")
    parser.add_argument("--as", dest="variants", nargs="+", default=["gelu", "gelu_new", "gelu_fast", "quick_gelu"])
    args = parser.parse_args()

    x = np.linspace(-10, 10, 2_000_001)
    print(
        f"max |gelu - gelu_new| over [-10, 10]: {np.abs(ops.gelu(x) - ops.gelu_new(x)).max():.2e} "
        f"(at |x| = {abs(x[np.abs(ops.gelu(x) - ops.gelu_new(x)).argmax()]):.2f})"
    )
    texts = SENTENCES
    if args.texts:
        texts = [s.strip() for s in Path(args.texts).read_text().splitlines() if s.strip() and not s.startswith("#")]
    texts = [" ".join(t) for t in texts] if args.residues else texts
    tok = minibert.Tokenizer.from_file(args.file)
    batch = tok.encode_batch(texts)
    head = "masked-lm" if "masked-lm" in minibert.weights.load(args.file, verify=False).heads else None
    own = minibert.weights.read_config(args.file).hidden_act
    base = run(args.file, batch, own, head)
    keep = batch["attention_mask"].astype(bool)
    emb = l2_normalize(mean_pooling(base.last_hidden_state, batch["attention_mask"]))
    scale = np.abs(base.last_hidden_state[keep]).max()
    print(
        f"{args.file}: {len(texts)} texts, {int(keep.sum())} tokens, float64; converted with hidden_act={own!r}; "
        f"max |last_hidden_state| = {scale:.3g}"
    )
    for variant in args.variants:
        if variant == own:
            continue
        other = run(args.file, batch, variant, head)
        diff = np.abs(other.last_hidden_state[keep] - base.last_hidden_state[keep]).max()
        cos = (l2_normalize(mean_pooling(other.last_hidden_state, batch["attention_mask"])) * emb).sum(-1).min()
        line = (
            f"  as {variant:<11} last_hidden_state max abs change {diff:.2e} ({diff / scale:.1e} of its scale); "
            f"min cosine of sentence embeddings {cos:.8f}"
        )
        if head:
            logits_diff = np.abs(other.logits[keep] - base.logits[keep]).max()
            same = (other.logits[keep].argmax(-1) == base.logits[keep].argmax(-1)).mean()
            line += f"; logits max abs change {logits_diff:.2e}, same top-1 token at {same:.1%} of positions"
        print(line)
    assert math.isfinite(scale)


if __name__ == "__main__":
    main()
