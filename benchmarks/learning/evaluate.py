"""The measurements of docs/training.md section "It really learns", from finished runs.

    python benchmarks/learning/evaluate.py mlm RUN_DIR CORPUS_DIR      # pretraining: held-out masked-LM
    python benchmarks/learning/evaluate.py pairs CORPUS_DIR MODEL.h5... # pair task: test accuracy + baselines

``mlm``: held-out sentences are those of CORPUS_DIR/test.txt (modules never seen in training).
In each sentence (one segment, ``[CLS] s [SEP]``, at most 64 tokens), BERT's selection picks
round(15%) of the tokens (seeded); all of them are replaced by [MASK] (a fill-mask test, no
80/10/10). Reported for RUN_DIR/initial.h5 (before) and RUN_DIR/model.h5 (after): the mean
cross-entropy of the masked tokens and the top-1 / top-5 accuracy, against a unigram baseline
(each masked token predicted by the token frequencies of train.txt: add-one smoothed
cross-entropy, and the 5 most frequent tokens as the top-5 guess).

``pairs``: the test accuracy of each classifier on CORPUS_DIR/pairs_test.jsonl, against the
majority class of pairs_train.jsonl and a bag-of-words logistic regression (scikit-learn;
features: word counts of A, of B, and the words A and B share; C chosen on pairs_dev.jsonl).
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

import minibert  # noqa: E402
from minibert import data, fit  # noqa: E402


def fill_mask_batches(sentences, tokenizer, batch_size=32, max_length=64, seed=0):
    batches = []
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer.encode_batch(sentences[start : start + batch_size], max_length=max_length, truncation=True)
        special = np.isin(enc["input_ids"], [tokenizer.cls_token_id, tokenizer.sep_token_id])
        rng = data.batch_rng(seed, 0, start, stream=2)
        _, labels = data.mask_tokens(
            enc["input_ids"], enc["attention_mask"], special, rng, tokenizer.vocab_size, tokenizer.mask_token_id
        )
        enc["input_ids"] = np.where(
            labels != data.IGNORE_INDEX, tokenizer.mask_token_id, enc["input_ids"]
        )  # every chosen token -> [MASK]
        enc["labels"] = labels
        batches.append(enc)
    return batches


def mlm(run_dir, corpus_dir):
    run_dir, corpus_dir = Path(run_dir), Path(corpus_dir)
    tokenizer = minibert.Tokenizer.from_file(run_dir / "model.h5")
    test = [s for doc in data.read_corpus(corpus_dir / "test.txt") for s in doc]
    batches = fill_mask_batches(test, tokenizer)
    targets = np.concatenate([b["labels"][b["labels"] != data.IGNORE_INDEX] for b in batches])
    counts = Counter()
    for doc in data.read_corpus(corpus_dir / "train.txt"):
        for s in doc:
            counts.update(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(s)))
    V = tokenizer.vocab_size
    freq = np.ones(V)  # add-one smoothing
    for i, c in counts.items():
        freq[i] += c
    p = freq / freq.sum()
    top5 = np.argsort(-freq)[:5]
    print(
        f"held-out: {len(test)} sentences of {corpus_dir / 'test.txt'}, {len(targets)} masked tokens; "
        f"vocabulary {V} (ln V = {np.log(V):.3f})"
    )
    print(f"{'model':<28} {'masked-LM loss':>14} {'top-1':>7} {'top-5':>7}")
    print(
        f"{'unigram (train.txt counts)':<28} {-np.log(p[targets]).mean():>14.3f} "
        f"{np.mean(targets == np.argmax(freq)):>7.3f} "
        f"{np.isin(targets, top5).mean():>7.3f}"
    )
    results = {}
    for name in ("initial.h5", "model.h5"):
        model = minibert.load(run_dir / name, head="pretraining")
        m = fit.evaluate_pretraining(model, batches)
        results[name] = m
        print(f"{name:<28} {m['dev_mlm_loss']:>14.3f} {m['dev_mlm_accuracy']:>7.3f} {m['dev_mlm_top5']:>7.3f}")
    return results


def pairs(corpus_dir, models):
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    corpus_dir = Path(corpus_dir)
    split = {
        s: data.read_examples(corpus_dir / f"pairs_{s}.jsonl", "pair-classification") for s in ("train", "dev", "test")
    }
    labels = {s: np.array([e.label for e in ex]) for s, ex in split.items()}
    majority = Counter(labels["train"]).most_common(1)[0][0]
    print(
        f"pairs: train {len(split['train'])}, dev {len(split['dev'])}, test {len(split['test'])}; "
        f"test labels { ({str(k): v for k, v in Counter(labels['test']).items()}) }"
    )
    print(f"{'classifier':<44} {'test accuracy':>13}")
    print(f"{'majority class (' + majority + ')':<44} {np.mean(labels['test'] == majority):>13.3f}")
    vec = CountVectorizer(lowercase=True, binary=True)
    vec.fit([e.text for e in split["train"]] + [e.text_pair for e in split["train"]])

    def features(examples):
        a = vec.transform([e.text for e in examples])
        b = vec.transform([e.text_pair for e in examples])
        return hstack([a, b, a.multiply(b)]).tocsr()

    X = {s: features(ex) for s, ex in split.items()}
    best = max(
        ((LogisticRegression(C=C, max_iter=5000).fit(X["train"], labels["train"]), C) for C in (0.01, 0.1, 1.0, 10.0)),
        key=lambda mc: mc[0].score(X["dev"], labels["dev"]),
    )
    print(
        f"{'bag-of-words logistic regression (C=' + str(best[1]) + ')':<44} "
        f"{best[0].score(X['test'], labels['test']):>13.3f}"
    )
    for path in models:
        m = fit.evaluate_file(path, corpus_dir / "pairs_test.jsonl", "pair-classification", max_length=64)
        print(f"{str(path):<44} {m['accuracy']:>13.3f}  (test loss {m['loss']:.3f}, {m['examples']} pairs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="evaluate pretraining and pair fine-tuning runs")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("mlm")
    p.add_argument("run_dir")
    p.add_argument("corpus_dir")
    p = sub.add_parser("pairs")
    p.add_argument("corpus_dir")
    p.add_argument("models", nargs="*")
    args = parser.parse_args()
    if args.what == "mlm":
        mlm(args.run_dir, args.corpus_dir)
    else:
        pairs(args.corpus_dir, args.models)
