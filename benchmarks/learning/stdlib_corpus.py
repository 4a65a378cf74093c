"""Build the offline text corpus of docs/training.md from the Python standard library's docstrings.

    python benchmarks/learning/stdlib_corpus.py OUT_DIR

Every machine with Python has this text, so anyone can rebuild the corpus exactly (the result
depends only on the Python version: the numbers in docs/training.md come from CPython 3.11.7;
the script prints the SHA-256 of every file it writes).

How it is built, step by step:
 1. the .py files under ``sysconfig.get_paths()["stdlib"]``, sorted by path, skipping test
    directories (``test``, ``tests``, ``idle_test``), ``site-packages`` and files that do not parse;
 2. in each file, the docstrings of the module, its classes and functions (``ast.walk`` order,
    ``ast.get_docstring(clean=True)``); each docstring is one *document*;
 3. a docstring is cut into paragraphs at blank lines; paragraphs that look like code or
    tables (a line starting with ``>>>``, ``...``, indentation, or fewer than 60% letters)
    are dropped; the rest is joined into one line and cut into sentences after ``. ! ?``
    followed by a space and a capital letter;
 4. sentences of 4 to 50 words are kept; documents with at least 2 sentences are kept;
    exact duplicate documents are kept once (the first);
 5. split by *module file*, so no module's text is in two splits: the first hex digit of
    SHA-1(relative path) 0 -> test, 1 -> dev, otherwise train.

Writes ``{train,dev,test}.txt`` (one sentence per line, a blank line between documents: the
input of ``minibert pretrain --corpus``) and the sentence-pair task ``pairs_{train,dev,test}.jsonl``
(``text``, ``text_pair``, ``label``): for each document and each sentence A with a next
sentence, B is that next sentence ("follows") or, with probability 1/2, a random sentence of
another document of the same split ("random"); seeded (``--seed``, default 0). ``--max-pairs``
caps each split's pairs (taken after a seeded shuffle).
"""

import argparse
import ast
import hashlib
import json
import random
import re
import sysconfig
from pathlib import Path

SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def stdlib_files():
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not SKIP_PARTS & set(p.relative_to(root).parts)]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def looks_like_prose(paragraph):
    lines = paragraph.splitlines()
    if any(line.startswith((">>>", "...", " ", "\t")) for line in lines):
        return False
    letters = sum(c.isalpha() or c == " " for c in paragraph)
    return letters >= 0.6 * len(paragraph)


def sentences(doc):
    out = []
    for paragraph in re.split(r"\n\s*\n", doc):
        if not looks_like_prose(paragraph):
            continue
        text = " ".join(paragraph.split())
        out += [s for s in SENTENCE_END.split(text) if 4 <= len(s.split()) <= 50]
    return out


def split_of(relative_path):
    digit = hashlib.sha1(relative_path.encode("utf-8")).hexdigest()[0]
    return "test" if digit == "0" else "dev" if digit == "1" else "train"


def build(out_dir, seed=0, max_pairs=None):
    root, files = stdlib_files()
    documents = {"train": [], "dev": [], "test": []}
    seen = set()
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for doc in docstrings(tree):
            sents = sentences(doc)
            key = "\n".join(sents)
            if len(sents) >= 2 and key not in seen:
                seen.add(key)
                documents[split_of(rel)].append(sents)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, docs in documents.items():
        (out_dir / f"{split}.txt").write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
        pairs = []
        for d, doc in enumerate(docs):
            for i in range(len(doc) - 1):
                if rng.random() < 0.5:
                    pairs.append({"text": doc[i], "text_pair": doc[i + 1], "label": "follows"})
                else:
                    other = rng.randrange(len(docs) - 1)
                    other += other >= d
                    pairs.append({"text": doc[i], "text_pair": rng.choice(docs[other]), "label": "random"})
        rng.shuffle(pairs)
        if max_pairs:
            pairs = pairs[:max_pairs]
        (out_dir / f"pairs_{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
        n_sent = sum(map(len, docs))
        print(f"{split}: {len(docs)} documents, {n_sent} sentences, {len(pairs)} pairs")
    for path in sorted(out_dir.iterdir()):
        print(f"sha256 {path.name}: {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pairs", type=int, help="keep at most this many pairs per split")
    args = parser.parse_args()
    build(args.out_dir, args.seed, args.max_pairs)
