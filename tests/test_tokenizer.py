"""minibert's tokenizer against transformers' slow BERT tokenizer (BertTokenizerLegacy).

Every expected value here is produced by the reference at test time, on a corpus of
~20,000 real lines built from the standard library, NumPy and hand-written hard cases
(tests/tokenizer_corpus.py). Run with ``-s`` or ``-rA`` to see the parity summary.
"""

import unicodedata
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minibert.errors import InputError
from minibert.tokenizer import Tokenizer

from helpers import minilm_directory
from tokenizer_corpus import build_corpus

N_LINES = 20000
SHOW = 5  # mismatches shown in a failure message


# -- shared objects (module scope: the reference is slow to build and to run) ----------


@pytest.fixture(scope="module")
def transformers_tokenizers():
    """transformers' tokenizers, the reference (conftest marks every test using them ``torch``)."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert import tokenization_bert_legacy

    transformers.logging.set_verbosity_error()  # longest_first on pairs warns on every call
    return SimpleNamespace(
        legacy=tokenization_bert_legacy.BertTokenizerLegacy,  # the slow tokenizer: the reference
        load_vocab=tokenization_bert_legacy.load_vocab,
        fast=transformers.BertTokenizer,
    )


@pytest.fixture(scope="module")
def vocab_file():
    return str(minilm_directory() / "vocab.txt")  # the uncased BERT vocabulary (30522 tokens)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(N_LINES)


@pytest.fixture(scope="module")
def ours(vocab_file):
    return Tokenizer.from_file(vocab_file)


@pytest.fixture(scope="module")
def ref(vocab_file, transformers_tokenizers):
    return transformers_tokenizers.legacy(vocab_file=vocab_file, do_lower_case=True)


@pytest.fixture(scope="module")
def fast(vocab_file, transformers_tokenizers):
    # transformers 5.23.0's BertTokenizer ignores a `vocab_file=` argument (it silently
    # uses a 5-token vocabulary); it needs the vocabulary as `vocab=`.
    with open(vocab_file, encoding="utf-8") as f:
        tokens = f.read().split("\n")[:-1]
    return transformers_tokenizers.fast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)


def ref_encode(ref, text, pair=None, **kwargs):
    """The reference's encoding, with token type ids (not returned by default in v5)."""
    out = ref(text, pair, return_token_type_ids=True, return_attention_mask=True, **kwargs)
    return {key: out[key] for key in ("input_ids", "token_type_ids", "attention_mask")}


def show(mismatches):
    lines = [f"{len(mismatches)} mismatches; first {min(SHOW, len(mismatches))}:"]
    for text, expected, got in mismatches[:SHOW]:
        lines.append(f"  text={text!r:.200}\n    expected={expected!r:.300}\n    got     ={got!r:.300}")
    return "\n".join(lines)


# -- corpus parity ---------------------------------------------------------------------


@pytest.mark.slow  # 20,000 lines and 10,000 pairs through both tokenizers
def test_corpus_parity_tokens_and_encodings(corpus, ours, ref):
    """tokenize(), encode(text) and encode(text, pair) on every line equal the reference's."""
    assert len(corpus) >= 10000, "the corpus builder found too little text on this machine"
    mismatches = []
    for text in corpus:
        expected = ref.tokenize(text)
        got = ours.tokenize(text)
        if got != expected:
            mismatches.append((text, expected, got))
        expected = ref_encode(ref, text)
        got = ours.encode(text)
        if got != expected:
            mismatches.append((text, expected, got))
    pairs = list(zip(corpus[0::2], corpus[1::2]))
    for a, b in pairs:
        expected = ref_encode(ref, a, b)
        got = ours.encode(a, b)
        if got != expected:
            mismatches.append(((a, b), expected, got))
    print(f"\ntokenizer parity: {len(corpus)} lines, {len(pairs)} pairs, {len(mismatches)} mismatches")
    assert not mismatches, show(mismatches)


@pytest.mark.slow
def test_corpus_parity_cased(vocab_file, corpus, transformers_tokenizers):
    """do_lower_case=False (no lower-casing, no accent stripping) on a sample of the corpus."""
    ours = Tokenizer.from_file(vocab_file, do_lower_case=False)
    ref = transformers_tokenizers.legacy(vocab_file=vocab_file, do_lower_case=False)
    sample = corpus[::4]
    mismatches = [(t, ref.tokenize(t), ours.tokenize(t)) for t in sample]
    mismatches = [m for m in mismatches if m[1] != m[2]]
    print(f"\ntokenizer parity (cased): {len(sample)} lines, {len(mismatches)} mismatches")
    assert not mismatches, show(mismatches)


@pytest.mark.parametrize("with_pairs", [False, True])
def test_batch_parity(corpus, ours, ref, with_pairs):
    """encode_batch (padding to the longest row) equals the reference with return_tensors='np'."""
    checked = 0
    for start in range(0, 800, 40):
        texts = corpus[start : start + 40]
        pairs = corpus[start + 40 : start + 80] if with_pairs else None
        for kwargs in ({}, {"max_length": 24, "truncation": True}):
            expected = ref(
                texts, pairs, padding="longest", return_tensors="np",
                return_token_type_ids=True, return_attention_mask=True, **kwargs,
            )
            got = ours.encode_batch(texts, pairs, **kwargs)
            for key in ("input_ids", "token_type_ids", "attention_mask"):
                assert got[key].dtype == np.int64
                np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{key} at line {start}")
            checked += len(texts)
    print(f"\ntokenizer batch parity: {checked} rows")


def test_batch_padding_max_length(corpus, ours, ref):
    texts, pairs = corpus[100:164], corpus[200:264]
    for max_length in (8, 16, 512):
        expected = ref(
            texts, pairs, padding="max_length", truncation="longest_first", max_length=max_length,
            return_tensors="np", return_token_type_ids=True,
        )
        got = ours.encode_batch(texts, pairs, padding="max_length", truncation="longest_first", max_length=max_length)
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            np.testing.assert_array_equal(got[key], expected[key])


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_truncation_parity(corpus, ours, ref, strategy):
    """Every truncation strategy, several max_lengths, with and without max_length padding."""
    lines = [line for line in corpus if line.strip()][:1200]
    mismatches = []
    count = 0
    for index in range(0, len(lines) - 1, 2):
        a, b = lines[index], lines[index + 1]
        max_length = (3, 4, 5, 7, 10, 16, 33, 64)[index // 2 % 8]
        padding = ("max_length", False, "longest")[index // 2 % 3]
        kwargs = dict(max_length=max_length, truncation=strategy, padding=padding)
        for args in ((a, b), (a, None)):
            if args[1] is None and max_length < 3:
                continue
            expected = ref_encode(ref, *args, **kwargs)
            got = ours.encode(*args, **kwargs)
            count += 1
            if got != expected:
                mismatches.append((args + (kwargs,), expected, got))
    print(f"\ntokenizer truncation parity ({strategy}): {count} encodings")
    assert not mismatches, show(mismatches)


def test_truncation_true_is_longest_first(corpus, ours, ref):
    for a, b in zip(corpus[1000:1200:2], corpus[1001:1200:2]):
        for max_length in (5, 12):
            kwargs = dict(max_length=max_length, truncation=True)
            assert ours.encode(a, b, **kwargs) == ref_encode(ref, a, b, **kwargs)
            assert ours.encode(a, b, **kwargs) == ours.encode(a, b, max_length=max_length, truncation="longest_first")


def test_decode_parity(corpus, ours, ref):
    mismatches = []
    for text in corpus[::5]:
        ids = ours.encode(text)["input_ids"]
        for skip in (False, True):
            expected = ref.decode(ids, skip_special_tokens=skip)
            got = ours.decode(ids, skip_special_tokens=skip)
            if got != expected:
                mismatches.append((text, expected, got))
    assert not mismatches, show(mismatches)


def test_convert_tokens_and_ids(corpus, ours, ref):
    for text in corpus[:2000:7]:
        tokens = ref.tokenize(text) + ["not-a-token", "##zzzz"]
        ids = ours.convert_tokens_to_ids(tokens)
        assert ids == ref.convert_tokens_to_ids(tokens)
        assert ours.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
        assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == ref.convert_ids_to_tokens(
            ids, skip_special_tokens=True
        )


# -- offsets ---------------------------------------------------------------------------


def _vanishing(char):
    """Characters the tokenizer deletes (controls, unassigned, combining marks...)."""
    return unicodedata.category(char)[0] == "C" or unicodedata.category(char) in ("Mn", "Me") or char == "\ufffd"


def _normalized(ours, text):
    """What basic tokenization makes of a span of text, with the spaces removed."""
    return "".join(ours.basic_tokenizer.tokenize(text))


def test_offsets_equal_fast_tokenizer_where_tokens_agree(corpus, ours, fast):
    """On lines with no deleted characters, spans equal the Rust tokenizer's offset mapping."""
    compared = 0
    mismatches = []
    for text in corpus[::2]:
        if any(_vanishing(c) for c in text):
            continue
        encoding = fast(text, return_offsets_mapping=True)
        fast_tokens = fast.convert_ids_to_tokens(encoding["input_ids"])
        mine = ours.encode(text, return_offsets=True)
        if ours.convert_ids_to_tokens(mine["input_ids"]) != fast_tokens:
            continue  # a known slow/fast tokenization difference (docs/tokenizer.md)
        compared += 1
        expected = [tuple(span) for span in encoding["offset_mapping"]]
        if mine["offsets"] != expected:
            mismatches.append((text, expected, mine["offsets"]))
    print(f"\ntokenizer offsets == fast tokenizer: {compared} lines")
    assert compared > 7500
    assert not mismatches, show(mismatches)


def test_offsets_point_at_the_token_text(corpus, ours):
    """On every line: tokens equal tokenize(), and text[start:end] normalises to the token."""
    bad = []
    for text in corpus:
        tokens, offsets = ours.tokenize_with_offsets(text)
        if tokens != ours.tokenize(text):
            bad.append((text, ours.tokenize(text), tokens))
            continue
        for token, (start, end) in zip(tokens, offsets):
            assert 0 <= start < end <= len(text)
            if token in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"):
                continue
            piece = token[2:] if token.startswith("##") else token
            if piece not in _normalized(ours, text[start:end]):
                bad.append((text, token, (start, end, text[start:end])))
    assert not bad, show(bad)


def test_offsets_special_tokens_and_padding(ours):
    out = ours.encode("Hi [MASK]!", "two", max_length=10, padding="max_length", return_offsets=True)
    assert out["offsets"] == [(0, 0), (0, 2), (3, 9), (9, 10), (0, 0), (0, 3), (0, 0), (0, 0), (0, 0), (0, 0)]


# -- properties over arbitrary Unicode -------------------------------------------------

any_text = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
        st.sampled_from(["[MASK]", "[CLS]", "[SEP]", "[UNK]", "[PAD]", "[mask]", " ", "##", "e\u0301", "中"]),
    ),
    max_size=6,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=any_text)
def test_property_arbitrary_unicode(ours, ref, text):
    tokens = ours.tokenize(text)
    assert tokens == ref.tokenize(text)
    ids = ours.encode(text)["input_ids"]
    assert ids == ref_encode(ref, text)["input_ids"]
    assert all(0 <= i < ours.vocab_size for i in ids)
    assert ours.decode(ids) == ref.decode(ids)
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)
    offset_tokens, offsets = ours.tokenize_with_offsets(text)
    assert offset_tokens == tokens
    assert all(0 <= start < end <= len(text) for start, end in offsets)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=any_text, b=any_text, max_length=st.integers(3, 20),
       strategy=st.sampled_from(["longest_first", "only_first", "only_second"]))
def test_property_truncation(ours, ref, a, b, max_length, strategy):
    kwargs = dict(max_length=max_length, truncation=strategy, padding="max_length")
    assert ours.encode(a, b, **kwargs) == ref_encode(ref, a, b, **kwargs)


# -- loading ---------------------------------------------------------------------------


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_from_h5_file(tmp_path, vocab_file, corpus, minilm_h5, do_lower_case, transformers_tokenizers):
    from minibert import weights

    path = tmp_path / "model.h5"
    w = weights.load(minilm_h5)  # a real converted file, saved again with the casing flag set (it is checksummed)
    w.do_lower_case = do_lower_case
    weights.save(path, w)
    ours = Tokenizer.from_file(path)
    assert ours.do_lower_case is do_lower_case
    assert ours.vocab_size == 30522
    ref = transformers_tokenizers.legacy(vocab_file=vocab_file, do_lower_case=do_lower_case)
    for text in corpus[:3000:3]:
        assert ours.tokenize(text) == ref.tokenize(text), text


def test_vocab_txt_cased_when_asked(vocab_file, transformers_tokenizers):
    assert Tokenizer.from_file(vocab_file).do_lower_case is True
    cased = Tokenizer.from_file(vocab_file, do_lower_case=False)
    reference = transformers_tokenizers.legacy(vocab_file=vocab_file, do_lower_case=False)
    assert cased.tokenize("Héllo") == reference.tokenize("Héllo")


# -- errors ----------------------------------------------------------------------------


def test_error_missing_vocab_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(InputError, match="does not exist") as error:
        Tokenizer.from_file(path)
    assert str(path) in str(error.value)


def test_error_vocab_without_special_tokens(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\nhello\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        Tokenizer.from_file(path)
    message = str(error.value)
    assert str(path) in message and "[SEP]" in message and "[MASK]" in message and "Fix:" in message


def test_error_vocab_not_utf8(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("[PAD]\n[UNK]\n".encode() + b"caf\xe9\n")
    with pytest.raises(InputError, match="not valid UTF-8") as error:
        Tokenizer.from_file(path)
    assert str(path) in str(error.value) and "offset 15" in str(error.value)


def test_error_h5_without_vocab():
    from pathlib import Path

    from minibert import WeightsError

    path = Path(__file__).parent / "fixtures" / "tiny_model.h5"  # converted without a vocab.txt
    with pytest.raises(WeightsError, match="holds no vocabulary") as error:
        Tokenizer.from_file(path)
    assert "vocab.txt" in str(error.value)


@pytest.mark.parametrize("bad", [b"bytes", None, 3, ["a", "list"]])
def test_error_text_not_str(ours, bad):
    with pytest.raises(InputError, match=f"text must be a str, got {type(bad).__name__}"):
        ours.tokenize(bad)
    with pytest.raises(InputError, match=f"text must be a str, got {type(bad).__name__}"):
        ours.encode(bad)
    if bad is not None:  # text_pair=None means "no pair"
        with pytest.raises(InputError, match=f"text_pair must be a str, got {type(bad).__name__}"):
            ours.encode("fine", bad)


def test_error_max_length_too_small(ours):
    with pytest.raises(InputError, match=r"max_length=1 is smaller than the 2 special tokens"):
        ours.encode("hello world", max_length=1, truncation=True)
    with pytest.raises(InputError, match=r"max_length=2 is smaller than the 3 special tokens"):
        ours.encode("hello", "world", max_length=2, truncation=True)


def test_error_bad_strategies(ours):
    with pytest.raises(InputError, match="unknown truncation 'middle'"):
        ours.encode("a", max_length=5, truncation="middle")
    with pytest.raises(InputError, match="unknown padding 'left'"):
        ours.encode("a", padding="left")
    with pytest.raises(InputError, match='padding="max_length" needs max_length'):
        ours.encode("a", padding="max_length")


def test_error_batch_inputs(ours):
    with pytest.raises(InputError, match="expects a list of str, got str"):
        ours.encode_batch("one text")
    with pytest.raises(InputError, match="text_pairs has 1 texts but texts has 2"):
        ours.encode_batch(["a", "b"], ["c"])
    with pytest.raises(InputError, match="different lengths"):
        ours.encode_batch(["a", "a b c"], padding=False)


def test_error_decode_out_of_range(ours):
    with pytest.raises(InputError, match="token id 30522 is outside the vocabulary"):
        ours.decode([101, 30522])


def test_read_text_file(tmp_path, ours):
    good = tmp_path / "good.txt"
    good.write_text("héllo wörld\n", encoding="utf-8")
    assert Tokenizer.read_text_file(good) == "héllo wörld\n"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\xff world")
    with pytest.raises(InputError) as error:
        Tokenizer.read_text_file(bad)
    message = str(error.value)
    assert str(bad) in message and "byte offset 5" in message and "0xff" in message
    with pytest.raises(InputError, match="cannot read text file"):
        Tokenizer.read_text_file(tmp_path / "missing.txt")


def test_vocab_txt_with_windows_line_endings(tmp_path, vocab_file, corpus, transformers_tokenizers):
    """A vocab.txt saved with CRLF line endings reads like transformers reads it."""
    with open(vocab_file, "rb") as f:
        data = f.read()
    path = tmp_path / "vocab.txt"
    path.write_bytes(data.replace(b"\n", b"\r\n"))
    ours = Tokenizer.from_file(path)
    assert ours.vocab == dict(transformers_tokenizers.load_vocab(str(path)))
    ref = transformers_tokenizers.legacy(vocab_file=str(path), do_lower_case=True)
    for text in corpus[:1000:10]:
        assert ours.tokenize(text) == ref.tokenize(text)


def test_batch_max_length_padding_without_truncation(ours, ref):
    """Rows longer than max_length and no truncation: no [B, T] array exists.

    The reference returns a ragged object array; we raise (docs/tokenizer.md, difference 6).
    """
    texts = ["short", "a much longer text with many many words in it"]
    ragged = ref(texts, padding="max_length", max_length=5, truncation=False, return_tensors="np")
    assert ragged["input_ids"].dtype == object
    with pytest.raises(InputError, match="different lengths"):
        ours.encode_batch(texts, padding="max_length", max_length=5)
    same = ours.encode_batch(texts[:1], padding="max_length", max_length=5)
    expected = ref(texts[:1], padding="max_length", max_length=5, truncation=False, return_tensors="np")
    np.testing.assert_array_equal(same["input_ids"], expected["input_ids"])


def test_decode_batch_rows_and_single_ids(corpus, ours, ref):
    """decode() takes a row of encode_batch's int64 array, and single ids, like the reference."""
    batch = ours.encode_batch(corpus[300:310])
    for row in batch["input_ids"]:
        assert ours.decode(row) == ref.decode(row.tolist())
        assert ours.decode(row, skip_special_tokens=True) == ref.decode(row.tolist(), skip_special_tokens=True)
    for token_id in (batch["input_ids"][0, 1], 101, 1996):
        assert ours.convert_ids_to_tokens(token_id) == ref.convert_ids_to_tokens(int(token_id))
        assert ours.decode(token_id) == ref.decode(int(token_id))


@pytest.fixture(scope="module")
def cased_pair(vocab_file, transformers_tokenizers):
    return (
        Tokenizer.from_file(vocab_file, do_lower_case=False),
        transformers_tokenizers.legacy(vocab_file=vocab_file, do_lower_case=False),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=any_text)
def test_property_arbitrary_unicode_cased(cased_pair, text):
    ours, ref = cased_pair
    tokens = ours.tokenize(text)
    assert tokens == ref.tokenize(text)
    assert ours.tokenize_with_offsets(text)[0] == tokens
    ids = ours.encode(text)["input_ids"]
    assert ours.decode(ids) == ref.decode(ids)
