"""Training data: labelled text files, and BERT's pretraining inputs (masked tokens, sentence pairs).

Fine-tuning files (``read_examples``) are JSON Lines or TSV, one example per line:

    {"text": "A man is eating.", "text_pair": "Someone eats.", "label": "entailment"}     .jsonl
    text<TAB>text_pair<TAB>label        (a header line naming the columns, then the rows)   .tsv

``text_pair`` is needed for ``pair-classification`` only. Every problem is a ``DataError``
naming the file and line: an empty file, a line that is not JSON, a missing field, a label
outside the label set.

A pretraining corpus (``read_corpus``) is the format of Google's ``create_pretraining_data.py``:
plain UTF-8 text, one sentence per line, documents separated by blank lines. From it,
``pretraining_batch`` builds what BERT was pretrained on: sentence pairs (B follows A in the
same document, or B is a sentence of another document: next-sentence prediction) with 15% of
the tokens selected for masked-LM prediction, of which 80% become [MASK], 10% a random token
and 10% stay as they are (``mask_tokens``).

Batches are a pure function of (seed, epoch, batch index): ``batch_rng`` seeds them, so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import MinibertError

TASKS = ("classification", "pair-classification")
IGNORE_INDEX = -100  # a label position that is not predicted (transformers' CrossEntropyLoss ignore_index)


class DataError(MinibertError, ValueError):
    """A training or corpus file cannot be read: empty, malformed, or with an unknown label."""


@dataclass
class Example:
    """One labelled text (or text pair)."""

    text: str
    text_pair: Optional[str]
    label: str
    line: int  # where it came from, for error messages


# ---------------------------------------------------------------------------------------
# Labelled files
# ---------------------------------------------------------------------------------------


def read_examples(path, task="classification"):
    """Read a .jsonl or .tsv file of labelled examples; a ``DataError`` names any bad line."""
    path = Path(path)
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}", f"use one of {', '.join(TASKS)}")
    if not path.is_file():
        raise DataError(f"{path}: file not found", "pass a .jsonl or .tsv file of labelled examples")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})", "save the file as UTF-8") from None
    if path.suffix == ".jsonl":
        rows = _jsonl_rows(path, text)
    elif path.suffix == ".tsv":
        rows = _tsv_rows(path, text)
    else:
        raise DataError(
            f"{path}: unknown file type {path.suffix!r}",
            "use .jsonl (one JSON object per line) or .tsv (with a header line)",
        )
    examples = []
    for line, row in rows:
        for key in ("text", "label") + (("text_pair",) if task == "pair-classification" else ()):
            if row.get(key) is None:
                raise DataError(f"{path}:{line}: the row has no {key!r} field", _fields_hint(task))
        for key in ("text", "text_pair"):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise DataError(
                    f"{path}:{line}: {key!r} is {type(row[key]).__name__}, expected a string", _fields_hint(task)
                )
        label = row["label"]
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(
                f"{path}:{line}: label {label!r} is {type(label).__name__}, expected a string or an integer",
                _fields_hint(task),
            )
        pair = row.get("text_pair") if task == "pair-classification" else None
        examples.append(Example(row["text"], pair, str(label), line))
    if not examples:
        raise DataError(f"{path}: the file holds no examples", _fields_hint(task))
    return examples


def _fields_hint(task):
    fields = '"text", "text_pair" and "label"' if task == "pair-classification" else '"text" and "label"'
    return f"every row needs {fields}"


def _jsonl_rows(path, text):
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{line}: not valid JSON ({e.msg})", "write one JSON object per line") from None
        if not isinstance(row, dict):
            raise DataError(
                f"{path}:{line}: expected a JSON object, found {type(row).__name__}", "write one JSON object per line"
            )
        yield line, row


def _tsv_rows(path, text):
    lines = text.splitlines()
    if not lines:
        return
    header = lines[0].split("\t")
    if "text" not in header or "label" not in header:
        raise DataError(
            f"{path}:1: the header {header} names no 'text' and 'label' columns",
            "start the file with a header line such as text<TAB>text_pair<TAB>label",
        )
    for line, row in enumerate(csv.reader(lines[1:], delimiter="\t", quoting=csv.QUOTE_NONE), start=2):
        if not row or row == [""]:
            continue
        if len(row) != len(header):
            raise DataError(
                f"{path}:{line}: {len(row)} columns, the header has {len(header)}",
                "one value per header column, separated by tabs (no tabs inside a text)",
            )
        yield line, dict(zip(header, row))


def label_set(examples, labels=None, path="the training file"):
    """label -> id. ``labels``: the names in order (``--labels a,b,c``); default: sorted from the data.

    Every example's label must be one of them.
    """
    names = list(labels) if labels else sorted({e.label for e in examples})
    if len(set(names)) != len(names):
        raise DataError(f"the labels {names} repeat a name", "give each label once, e.g. --labels neg,pos")
    if len(names) < 2:
        raise DataError(
            f"{path}: a classifier needs at least 2 labels, found {names}", "check the label column, or pass --labels"
        )
    label2id = {name: i for i, name in enumerate(names)}
    for e in examples:
        if e.label not in label2id:
            raise DataError(
                f"{path}:{e.line}: unknown label {e.label!r} (known: {', '.join(names)})",
                "fix the row, or add the label to --labels",
            )
    return label2id


def classification_batch(examples, tokenizer, label2id, max_length):
    """Tokenize, pad to the longest row and attach the labels: the keyword arguments of value_and_grad."""
    pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
    enc = tokenizer.encode_batch(
        [e.text for e in examples], pairs, max_length=max_length, truncation=True
    )  # [B, T] each
    enc["labels"] = np.array([label2id[e.label] for e in examples], dtype=np.int64)  # [B]
    return enc


def batch_rng(seed, epoch, index, stream=0):
    """The random generator of one batch: a pure function of (seed, epoch, batch index).

    ``stream`` separates independent uses of the same indices (0: training, 1: held-out batches).
    """
    return np.random.default_rng([stream, seed, epoch, index])


def epoch_order(n, seed, epoch):
    """The shuffled order of n examples in an epoch (seeded, so a resumed run repeats it)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


# ---------------------------------------------------------------------------------------
# Pretraining: corpus, masked tokens, sentence pairs
# ---------------------------------------------------------------------------------------


def read_corpus(path):
    """Documents as lists of sentences: one sentence per line, a blank line between documents."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: corpus file not found",
            "pass a UTF-8 text file: one sentence per line, blank line between documents",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})", "save the corpus as UTF-8") from None
    documents, current = [], []
    for raw in text.splitlines():
        sentence = raw.strip()
        if sentence:
            current.append(sentence)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    if len(documents) < 2:
        raise DataError(
            f"{path}: {len(documents)} document(s); next-sentence pairs need at least 2",
            "separate documents by a blank line",
        )
    return documents


def mask_tokens(
    input_ids,
    attention_mask,
    special_tokens_mask,
    rng,
    vocab_size,
    mask_token_id,
    masked_lm_prob=0.15,
    max_predictions=None,
):
    """BERT's masked-LM inputs: ``create_masked_lm_predictions`` of Google's create_pretraining_data.py.

    In each row, round(15% of its tokens) positions are chosen (at least 1; the count includes
    [CLS] and [SEP] but not padding, as Google's, which pads afterwards), uniformly among the
    tokens that are not special. Each chosen token becomes [MASK] with probability 0.8, stays
    itself with probability 0.1, and becomes a uniformly random vocabulary id with probability
    0.1. Returns (masked input_ids [B, T], labels [B, T]: the original id where chosen, else -100).
    """
    input_ids = np.asarray(input_ids)  # [B, T]
    real = np.asarray(attention_mask, dtype=bool)  # [B, T]: not padding
    candidate = real & ~np.asarray(special_tokens_mask, dtype=bool)  # [B, T]: may be chosen
    masked = input_ids.copy()  # [B, T]
    labels = np.full_like(input_ids, IGNORE_INDEX)  # [B, T]
    for b in range(input_ids.shape[0]):
        num_to_predict = max(1, int(round(real[b].sum() * masked_lm_prob)))
        if max_predictions is not None:
            num_to_predict = min(max_predictions, num_to_predict)
        chosen = np.sort(rng.permutation(np.flatnonzero(candidate[b]))[:num_to_predict])  # [k]
        for t in chosen:
            labels[b, t] = input_ids[b, t]
            if rng.random() < 0.8:
                masked[b, t] = mask_token_id
            elif rng.random() < 0.5:
                pass  # keep the original token
            else:
                masked[b, t] = rng.integers(0, vocab_size)
    return masked, labels


def sentence_pairs(documents, rng, count):
    """``count`` next-sentence pairs: (A, B, label) with label 0 = B follows A, 1 = B is random.

    A is a sentence of a document that has a next sentence; with probability 0.5, B is that next
    sentence, otherwise a random sentence of a different, random document (Google's
    create_instances_from_document, one sentence per segment).
    """
    starts = [(d, i) for d, doc in enumerate(documents) for i in range(len(doc) - 1)]
    if not starts:
        raise DataError("no document has two sentences", "the corpus needs documents of several lines")
    pairs = []
    for _ in range(count):
        d, i = starts[rng.integers(len(starts))]
        if rng.random() < 0.5:
            pairs.append((documents[d][i], documents[d][i + 1], 0))
        else:
            other = rng.integers(len(documents) - 1)
            other += other >= d  # any document but d
            doc = documents[other]
            pairs.append((documents[d][i], doc[rng.integers(len(doc))], 1))
    return pairs


def pretraining_batch(documents, tokenizer, rng, batch_size, max_length, masked_lm_prob=0.15):
    """One batch for the "pretraining" head: masked sentence pairs and their two label sets."""
    pairs = sentence_pairs(documents, rng, batch_size)
    enc = tokenizer.encode_batch(
        [a for a, _, _ in pairs], [b for _, b, _ in pairs], max_length=max_length, truncation=True
    )
    special = np.isin(enc["input_ids"], [tokenizer.cls_token_id, tokenizer.sep_token_id])  # [B, T]
    enc["input_ids"], enc["labels"] = mask_tokens(
        enc["input_ids"],
        enc["attention_mask"],
        special,
        rng,
        len(tokenizer.vocab),
        tokenizer.mask_token_id,
        masked_lm_prob,
    )
    enc["next_sentence_label"] = np.array([label for _, _, label in pairs], dtype=np.int64)  # [B]
    return enc
