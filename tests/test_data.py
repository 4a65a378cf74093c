"""minibert.data: reading labelled files (clear errors), BERT's masking and sentence pairs."""

import numpy as np
import pytest
from training_fixtures import tiny_vocab, write_jsonl

from minibert import Tokenizer, data
from minibert.data import DataError


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(tiny_vocab())


def test_jsonl_and_tsv_read_the_same(tmp_path):
    rows = [
        {"text": "a cat", "text_pair": "a dog", "label": "yes"},
        {"text": "the mat", "text_pair": "sat", "label": 1},
    ]
    j = data.read_examples(write_jsonl(tmp_path / "x.jsonl", rows), "pair-classification")
    (tmp_path / "x.tsv").write_text("text\ttext_pair\tlabel\na cat\ta dog\tyes\n\nthe mat\tsat\t1\n", encoding="utf-8")
    t = data.read_examples(tmp_path / "x.tsv", "pair-classification")
    assert (
        [(e.text, e.text_pair, e.label) for e in j]
        == [(e.text, e.text_pair, e.label) for e in t]
        == [("a cat", "a dog", "yes"), ("the mat", "sat", "1")]
    )
    assert [e.line for e in t] == [2, 4]
    assert data.read_examples(tmp_path / "x.jsonl")[0].text_pair is None  # classification ignores the pair


@pytest.mark.parametrize(
    "content, suffix, task, message",
    [
        ("", ".jsonl", "classification", "holds no examples"),
        ('{"text": "a", "label": "x"}\n{"text": "b"\n', ".jsonl", "classification", r"x.jsonl:2: not valid JSON"),
        ('{"text": "a", "label": "x"}\n[1, 2]\n', ".jsonl", "classification", r"x.jsonl:2: expected a JSON object"),
        (
            '{"text": "a", "label": "x"}\n\n{"label": "y"}\n',
            ".jsonl",
            "classification",
            r"x.jsonl:3: the row has no 'text'",
        ),
        ('{"text": "a", "label": "x"}\n', ".jsonl", "pair-classification", r"x.jsonl:1: the row has no 'text_pair'"),
        ('{"text": 3, "label": "x"}\n', ".jsonl", "classification", r"x.jsonl:1: 'text' is int"),
        ("text\tlabel\na\tx\nb\tx\textra\n", ".tsv", "classification", r"x.tsv:3: 3 columns, the header has 2"),
        ("sentence\tgold\na\tx\n", ".tsv", "classification", r"x.tsv:1: the header"),
        ("a,x\n", ".csv", "classification", "unknown file type"),
    ],
)
def test_bad_files_name_the_line(tmp_path, content, suffix, task, message):
    path = tmp_path / f"x{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as e:
        data.read_examples(path, task)
    assert e.value.hint


def test_missing_file_and_unknown_label(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        data.read_examples(tmp_path / "nope.jsonl")
    examples = data.read_examples(
        write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}])
    )
    with pytest.raises(DataError, match=r"t.jsonl:2: unknown label 'meh' \(known: neg, pos\)"):
        data.label_set(examples, ["neg", "pos"], path=str(tmp_path / "t.jsonl"))
    assert data.label_set(examples) == {"meh": 0, "pos": 1}  # default: sorted names
    with pytest.raises(DataError, match="at least 2 labels"):
        data.label_set(examples[:1])


def test_classification_batch(tokenizer, tmp_path):
    examples = data.read_examples(
        write_jsonl(
            tmp_path / "t.jsonl",
            [
                {"text": "the cat", "text_pair": "sat", "label": "b"},
                {"text": "a dog ran on the mat", "text_pair": "x", "label": "a"},
            ],
        ),
        "pair-classification",
    )
    b = data.classification_batch(examples, tokenizer, {"a": 0, "b": 1}, max_length=8)
    assert b["input_ids"].shape == (2, 8)  # the second pair is truncated to 8
    np.testing.assert_array_equal(b["labels"], [1, 0])
    assert b["attention_mask"][0].sum() == 6  # [CLS] the cat [SEP] sat [SEP]
    np.testing.assert_array_equal(b["token_type_ids"][0, :6], [0, 0, 0, 0, 1, 1])


def test_masking_follows_bert():
    """round(15% of the tokens) chosen per row, never a special token or padding; 80/10/10."""
    rng = np.random.default_rng(0)
    B, T, V, MASK = 400, 40, 1000, 4
    lengths = rng.integers(5, T + 1, size=B)
    ids = rng.integers(10, V, size=(B, T))
    attention = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    special = np.zeros((B, T), bool)
    special[:, 0] = True
    special[np.arange(B), lengths - 1] = True  # [CLS] ... [SEP]
    ids[attention == 0] = 0
    masked, labels = data.mask_tokens(ids, attention, special, rng, V, MASK)
    chosen = labels != data.IGNORE_INDEX
    np.testing.assert_array_equal(chosen.sum(1), np.maximum(1, np.round(lengths * 0.15)).astype(int))
    assert not (chosen & (special | (attention == 0))).any()
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])
    n = chosen.sum()
    as_mask = (masked[chosen] == MASK).mean()
    kept = (masked[chosen] == ids[chosen]).mean()
    randomised = 1 - as_mask - kept
    sd = np.sqrt(0.1 * 0.9 / n)  # ~2,400 chosen tokens: 5 standard deviations below
    assert (
        abs(as_mask - 0.8) < 5 * np.sqrt(0.16 / n)
        and abs(kept - 0.1) < 5 * sd + 1 / V
        and abs(randomised - 0.1) < 5 * sd
    )


def test_sentence_pairs_and_pretraining_batch(tokenizer):
    docs = [[f"doc {d} sentence {i}" for i in range(4)] for d in range(5)]
    rng = np.random.default_rng(1)
    pairs = data.sentence_pairs(docs, rng, 2000)
    for a, b, label in pairs:
        da, ia = int(a.split()[1]), int(a.split()[3])
        db, ib = int(b.split()[1]), int(b.split()[3])
        assert (label == 0) == (da == db and ib == ia + 1)
        assert label == 0 or da != db  # a random B is never from A's document
    assert 0.45 < np.mean([p[2] for p in pairs]) < 0.55
    batch = data.pretraining_batch(docs, tokenizer, data.batch_rng(0, 0, 0), batch_size=6, max_length=16)
    assert batch["input_ids"].shape[0] == batch["labels"].shape[0] == 6 and batch["next_sentence_label"].shape == (6,)
    again = data.pretraining_batch(docs, tokenizer, data.batch_rng(0, 0, 0), batch_size=6, max_length=16)
    for key in batch:  # a pure function of (seed, epoch, index)
        np.testing.assert_array_equal(batch[key], again[key])


def test_read_corpus(tmp_path):
    (tmp_path / "c.txt").write_text("a b.\nc d.\n\n\ne f.\n\ng h.\ni j.\n", encoding="utf-8")
    assert data.read_corpus(tmp_path / "c.txt") == [["a b.", "c d."], ["e f."], ["g h.", "i j."]]
    (tmp_path / "one.txt").write_text("a.\nb.\n", encoding="utf-8")
    with pytest.raises(DataError, match="1 document"):
        data.read_corpus(tmp_path / "one.txt")
