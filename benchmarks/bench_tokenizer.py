"""Tokenizer speed: minibert vs transformers' slow (pure Python) and fast (Rust) BERT tokenizers.

Usage (from the repository root):

    python benchmarks/bench_tokenizer.py [--lines 20000] [--repeats 3]

Tokenizes the corpus of tests/tokenizer_corpus.py line by line with each tokenizer and
prints lines per second (best of ``--repeats`` passes), plus the ratios minibert/slow and
minibert/fast. Every minibert pass uses a newly built Tokenizer, so its word cache starts
empty and only helps with words repeated inside the corpus. "warm" is one more pass over
the same corpus with the cache already full (an upper bound, not a fair comparison).
"""

import argparse
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import transformers  # noqa: E402
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy  # noqa: E402

from minibert.tokenizer import Tokenizer  # noqa: E402

from tokenizer_corpus import build_corpus, vocab_path  # noqa: E402


def lines_per_second(make_function, lines, repeats):
    """Best lines/s of ``repeats`` passes over ``lines``, each with a new ``make_function()``."""
    best = float("inf")
    for _ in range(repeats):
        function = make_function()
        start = time.perf_counter()
        for line in lines:
            function(line)
        best = min(best, time.perf_counter() - start)
    return len(lines) / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    transformers.logging.set_verbosity_error()
    vocab = vocab_path()
    lines = build_corpus(args.lines)
    chars = sum(map(len, lines))
    print(f"corpus: {len(lines)} lines, {chars} characters; vocab {vocab}")
    print(f"python {platform.python_version()}, transformers {transformers.__version__}, {platform.machine()}")

    slow = BertTokenizerLegacy(vocab_file=vocab, do_lower_case=True)
    with open(vocab, encoding="utf-8") as f:
        tokens = f.read().split("\n")[:-1]
    # transformers 5.23.0's BertTokenizer ignores vocab_file=; it takes the vocabulary as vocab=.
    fast = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)

    def new_minibert():
        return Tokenizer.from_file(vocab)

    results = {}
    for name, make_tokenize in (
        ("minibert", lambda: new_minibert().tokenize),
        ("slow (BertTokenizerLegacy)", lambda: slow.tokenize),
        ("fast (Rust BertTokenizer)", lambda: fast.tokenize),
    ):
        results[name] = lines_per_second(make_tokenize, lines, args.repeats)

    encode = {}
    for name, make_encode in (
        ("minibert", lambda: new_minibert().encode),
        ("slow (BertTokenizerLegacy)", lambda: lambda t: slow(t, return_token_type_ids=True)),
        ("fast (Rust BertTokenizer)", lambda: lambda t: fast(t, return_token_type_ids=True)),
    ):
        encode[name] = lines_per_second(make_encode, lines, args.repeats)

    warm_tokenizer = new_minibert()
    for line in lines:
        warm_tokenizer.tokenize(line)
    warm = lines_per_second(lambda: warm_tokenizer.tokenize, lines, 1)

    # The Rust tokenizer is much faster when it gets the whole corpus in one call.
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        fast(lines, return_token_type_ids=True)
        best = min(best, time.perf_counter() - start)
    fast_batch = len(lines) / best

    print(f"\n{'tokenizer':<30}{'tokenize lines/s':>18}{'encode lines/s':>16}")
    for name in results:
        print(f"{name:<30}{results[name]:>18,.0f}{encode[name]:>16,.0f}")
    print(f"{'fast, one call for all lines':<30}{'':>18}{fast_batch:>16,.0f}")
    print(f"{'minibert, warm word cache':<30}{warm:>18,.0f}")
    mini, slow_rate, fast_rate = results.values()
    print(f"\nminibert / slow: {mini / slow_rate:.2f}x   minibert / fast: {mini / fast_rate:.2f}x  (tokenize)")
    mini, slow_rate, fast_rate = encode.values()
    print(f"minibert / slow: {mini / slow_rate:.2f}x   minibert / fast: {mini / fast_rate:.2f}x  (encode)")


if __name__ == "__main__":
    main()
