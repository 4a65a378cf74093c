"""BERT's WordPiece tokenizer, written from scratch.

Turning text into model inputs happens in three stages, each a few small functions below:

1. **Special tokens.** The five special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``,
   ``[MASK]``) are cut out of the raw text first, exactly as written, so ``"a[MASK]b"``
   keeps its ``[MASK]``. (``"[mask]"`` is *not* special: it is ordinary text.)
2. **Basic tokenization** (``BasicTokenizer``): clean the text, put spaces around CJK
   ideographs, normalise to NFC, split on whitespace, lower-case and strip accents (uncased
   models only), then split every punctuation character off as its own token.
3. **WordPiece** (``WordpieceTokenizer``): split each word into the longest vocabulary
   pieces, left to right; pieces after the first are written ``##piece``. A word that
   cannot be split, or that is longer than 100 characters, becomes ``[UNK]``.

``Tokenizer`` ties the stages together and adds what the model needs: ids, ``[CLS] A [SEP]
B [SEP]``, token type ids, truncation, padding, batching, decoding and character offsets.

The behaviour follows Hugging Face's slow tokenizer (``BertTokenizerLegacy`` in
transformers 5.23.0) token for token; ``docs/tokenizer.md`` lists where that differs from
Google's original BERT code and from the Rust ("fast") tokenizer.
"""

import io
import numbers
import os
import re
import unicodedata

from .errors import InputError
from .weights import read_vocab

# The special tokens BERT's vocabulary must contain, in the order transformers lists them.
UNK, SEP, PAD, CLS, MASK = "[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"
SPECIAL_TOKENS = (UNK, SEP, PAD, CLS, MASK)

# Longer words (counted in characters after basic tokenization) become [UNK] (HF: 100; Google: 200).
MAX_INPUT_CHARS_PER_WORD = 100

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
PADDING_STRATEGIES = ("longest", "max_length")


# ---------------------------------------------------------------------------------------
# Character classes. Each answers a question about ONE character, as BERT defines it.
# ---------------------------------------------------------------------------------------


def _is_whitespace(char):
    """True for characters BERT turns into a plain space."""
    # Space, tab, newline and carriage return, plus every Unicode "space separator" (Zs).
    if char in " \t\n\r":
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char):
    """True for characters BERT deletes from the text."""
    # Tab, newline and carriage return are controls too, but count as whitespace instead.
    if char in "\t\n\r":
        return False
    # Every "other" category: Cc control, Cf format (e.g. zero-width space), Cs, Co, Cn unassigned.
    return unicodedata.category(char).startswith("C")


def _is_punctuation(char):
    """True for characters that always become a token of their own."""
    cp = ord(char)
    # Every ASCII character that is neither a letter, a digit nor a space/control (e.g. $ ^ `).
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    # Every Unicode punctuation category: Pc, Pd, Ps, Pe, Pi, Pf, Po.
    return unicodedata.category(char).startswith("P")


def _is_chinese_char(cp):
    """True if code point ``cp`` is a CJK ideograph (not Hangul, Hiragana or Katakana)."""
    # The CJK Unified Ideographs blocks and extensions A-E, plus the compatibility ideographs.
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _clean_char(char):
    """What one character of the input becomes after cleaning and CJK spacing.

    Returns ``""`` (deleted), ``" "`` (whitespace), ``" X "`` (a CJK ideograph with spaces
    around it) or the character itself.
    """
    # NUL and U+FFFD (the replacement character of broken decoding) are dropped like controls.
    if char == "\x00" or char == "\ufffd" or _is_control(char):
        return ""
    if _is_whitespace(char):
        return " "
    if _is_chinese_char(ord(char)):
        return " " + char + " "
    return char


class _CharTable(dict):
    """A memo of ``_clean_char`` usable as a ``str.translate`` table (keys are code points).

    ``str.translate`` looks up every character of the text in this dict; the first time a
    character is seen, ``__missing__`` computes its answer with ``_clean_char`` and stores it.
    Cleaning a text is then one fast C loop instead of a Python loop over its characters.
    """

    MAX_ENTRIES = 200_000  # never grow past this (there are 1.1 million code points)

    def __missing__(self, cp):
        result = _clean_char(chr(cp))
        if len(self) < self.MAX_ENTRIES:
            self[cp] = result
        return result


_CLEAN_TABLE = _CharTable()


def clean_text(text):
    """Delete control characters, map whitespace to spaces and surround CJK ideographs with spaces."""
    return text.translate(_CLEAN_TABLE)


def strip_accents(word):
    """Remove accents: decompose (NFD) and drop the combining marks (category Mn)."""
    if word.isascii():  # ASCII has no accents: skip the work
        return word
    decomposed = unicodedata.normalize("NFD", word)
    return "".join(char for char in decomposed if unicodedata.category(char) != "Mn")


_PUNCTUATION_MEMO = {}


def _is_punctuation_memo(char):
    """``_is_punctuation`` with a memo (the same few characters come up again and again)."""
    answer = _PUNCTUATION_MEMO.get(char)
    if answer is None:
        answer = _is_punctuation(char)
        if len(_PUNCTUATION_MEMO) < 200_000:
            _PUNCTUATION_MEMO[char] = answer
    return answer


def split_on_punctuation(word):
    """Split ``word`` so that every punctuation character is a token of its own.

    ``"hello,world!"`` -> ``["hello", ",", "world", "!"]``.
    """
    if word.isalnum():  # letters and digits only: there is no punctuation to split on
        return [word]
    pieces = []
    current = []
    for char in word:
        if _is_punctuation_memo(char):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces


# Matches any special token, written exactly (none is a prefix or a part of another one).
_SPECIAL_TOKEN_PATTERN = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))


def split_on_special_tokens(text):
    """Cut the exact special tokens out of ``text``.

    Returns ``(piece, start, is_special)`` triples covering the text, in order, where
    ``start`` is the position of ``piece`` in ``text``. Empty pieces are left out.
    """
    if "[" not in text:  # every special token starts with "[": nothing to cut
        return [(text, 0, False)] if text else []
    pieces = []
    position = 0
    for match in _SPECIAL_TOKEN_PATTERN.finditer(text):
        if match.start() > position:
            pieces.append((text[position : match.start()], position, False))
        pieces.append((match.group(), match.start(), True))
        position = match.end()
    if position < len(text):
        pieces.append((text[position:], position, False))
    return pieces


# ---------------------------------------------------------------------------------------
# Stage 2: basic tokenization.
# ---------------------------------------------------------------------------------------


class BasicTokenizer:
    """Cleans text and splits it into words and punctuation (no vocabulary needed).

    ``do_lower_case=True`` (uncased models) also lower-cases and strips accents. Words in
    ``never_split`` (the special tokens) are kept exactly as they are.
    """

    def __init__(self, do_lower_case=True, never_split=SPECIAL_TOKENS):
        self.do_lower_case = do_lower_case
        self.never_split = frozenset(never_split)

    def normalize_word(self, word):
        """Lower-case and strip accents (uncased models), leaving special tokens alone."""
        if self.do_lower_case and word not in self.never_split:
            return strip_accents(word.lower())
        return word

    def split_words(self, text):
        """Clean ``text``, normalise it to NFC and split it on whitespace."""
        text = clean_text(text)
        # The same character written with different code points (e + U+0301 vs é) becomes one.
        text = unicodedata.normalize("NFC", text)
        return text.split()

    def tokenize_word(self, word):
        """Normalise one whitespace-separated word and split off its punctuation."""
        word = self.normalize_word(word)
        if word in self.never_split:
            return [word]
        # Stripping accents can empty a word (one made of combining marks only): it vanishes.
        return split_on_punctuation(word) if word else []

    def tokenize(self, text: str) -> "list[str]":
        """Split ``text`` into words and punctuation marks."""
        tokens = []
        for word in self.split_words(text):
            tokens.extend(self.tokenize_word(word))
        return tokens


# ---------------------------------------------------------------------------------------
# Stage 3: WordPiece.
# ---------------------------------------------------------------------------------------


class WordpieceTokenizer:
    """Splits one word into vocabulary pieces, greedily taking the longest match first.

    ``"unaffable"`` -> ``["una", "##ffa", "##ble"]`` with the uncased BERT vocabulary.
    """

    def __init__(self, vocab, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize_word(self, word):
        """The WordPiece pieces of one word (``[unk_token]`` if it cannot be split)."""
        spans = self.piece_spans(word)
        if spans is None:
            return [self.unk_token]
        return [word[start:end] if start == 0 else "##" + word[start:end] for start, end in spans]

    def piece_spans(self, word):
        """The ``(start, end)`` character spans of the pieces of ``word``, or None if it has none."""
        if len(word) > self.max_input_chars_per_word:
            return None
        spans = []
        start = 0
        while start < len(word):
            # Try the longest remaining substring first, then shorten it one character at a time.
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:  # not even one character is in the vocabulary
                return None
            spans.append((start, end))
            start = end
        return spans


# ---------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------


def read_text_file(path, kind="text file", hint="convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`"):
    """Read a UTF-8 text file; an ``InputError`` names the file and the first bad byte."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise InputError(f"cannot read {kind} '{path}': {error.strerror or error}", hint="check the path") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{kind} '{path}' is not valid UTF-8: byte 0x{data[error.start]:02x} "
            f"at byte offset {error.start} cannot be decoded",
            hint=hint,
        ) from None


def read_vocab_txt(path):
    """The tokens of a ``vocab.txt`` (one per line, the line number is the id)."""
    hint = "a BERT vocab.txt is UTF-8; re-save it as UTF-8 or use the original file"
    text = read_text_file(path, "vocabulary file", hint)
    # Like transformers (a file opened in text mode): "\n", "\r\n" and "\r" all end a line.
    return [line.rstrip("\n") for line in io.StringIO(text, newline=None).readlines()]


# ---------------------------------------------------------------------------------------
# The tokenizer a user calls.
# ---------------------------------------------------------------------------------------


class Tokenizer:
    """BERT's tokenizer: text -> tokens -> ids -> model inputs, and back.

    Build one with ``Tokenizer.from_file("vocab.txt")`` or ``Tokenizer.from_file("model.h5")``.
    """

    WORD_CACHE_SIZE = 100_000

    def __init__(self, tokens: "list[str]", do_lower_case: bool = True, source: str = "<vocabulary>"):
        # Like transformers, a token listed twice keeps its LAST id.
        self.vocab = {token: index for index, token in enumerate(tokens)}
        self.ids_to_tokens = {index: token for token, index in self.vocab.items()}
        self.vocab_size = len(tokens)
        missing = [token for token in SPECIAL_TOKENS if token not in self.vocab]
        if missing:
            raise InputError(
                f"vocabulary '{source}' lacks the special token(s) {', '.join(missing)}",
                hint="use a BERT vocabulary: it must contain [PAD], [UNK], [CLS], [SEP] and [MASK]",
            )
        self.do_lower_case = bool(do_lower_case)
        self.basic_tokenizer = BasicTokenizer(do_lower_case=self.do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab)
        self.unk_token_id = self.vocab[UNK]
        self.cls_token_id = self.vocab[CLS]
        self.sep_token_id = self.vocab[SEP]
        self.pad_token_id = self.vocab[PAD]
        self.mask_token_id = self.vocab[MASK]
        self.special_ids = frozenset(self.vocab[token] for token in SPECIAL_TOKENS)
        self._word_cache = {}

    @classmethod
    def from_file(cls, path: "str | os.PathLike", do_lower_case: "bool | None" = None) -> "Tokenizer":
        """Load a ``vocab.txt`` (uncased unless ``do_lower_case=False``) or a minibert ``.h5``."""
        path = os.fspath(path)
        # A .h5 path goes to the weights reader, which says what is wrong with a model file.
        if not path.endswith((".h5", ".hdf5")) and not os.path.isfile(path):
            raise InputError(
                f"vocabulary file '{path}' does not exist",
                hint="pass the path of a BERT vocab.txt or of a minibert .h5 file",
            )
        if path.endswith((".h5", ".hdf5")):
            tokens, stored_lower_case = read_vocab(path)  # weights.py: the one reader of the .h5 format
            if do_lower_case is None:
                do_lower_case = stored_lower_case
        else:
            tokens = read_vocab_txt(path)
            if do_lower_case is None:
                do_lower_case = True
        return cls(tokens, do_lower_case=do_lower_case, source=path)

    read_text_file = staticmethod(read_text_file)

    # -- text to tokens ------------------------------------------------------------------

    def tokenize(self, text):
        """Split ``text`` into WordPiece tokens (no [CLS]/[SEP])."""
        _check_text(text, "text")
        tokens = []
        for piece, _, is_special in split_on_special_tokens(text):
            if is_special:
                tokens.append(piece)
                continue
            for word in self.basic_tokenizer.split_words(piece):
                tokens.extend(self._word_tokens(word))
        return tokens

    def _word_tokens(self, word):
        """All the WordPiece tokens of one whitespace-separated word, remembered in a cache.

        Text repeats the same words over and over; the cache makes the second time free.
        It holds at most ``WORD_CACHE_SIZE`` words and is emptied when full.
        """
        tokens = self._word_cache.get(word)
        if tokens is None:
            tokens = []
            for part in self.basic_tokenizer.tokenize_word(word):
                tokens.extend(self.wordpiece_tokenizer.tokenize_word(part))
            if len(self._word_cache) >= self.WORD_CACHE_SIZE:
                self._word_cache.clear()
            self._word_cache[word] = tokens
        return tokens

    def tokenize_with_offsets(self, text):
        """Tokens of ``text`` with the ``(start, end)`` span each one came from in ``text``.

        Returns ``(tokens, offsets)``; ``tokens`` equals ``tokenize(text)``. A word changed
        by normalisation (accents, ligatures...) maps back to the original characters it
        came from; characters deleted by cleaning inside a word are included in its span.
        """
        _check_text(text, "text")
        tokens, offsets = [], []
        for piece, piece_start, is_special in split_on_special_tokens(text):
            if is_special:
                tokens.append(piece)
                offsets.append((piece_start, piece_start + len(piece)))
                continue
            for word, spans in _words_with_spans(piece, piece_start):
                word, spans = self._normalize_with_spans(word, spans)
                if word in self.basic_tokenizer.never_split:
                    parts = [(word, 0)]
                else:
                    parts = _punctuation_parts(word)
                for part, part_start in parts:
                    piece_spans = self.wordpiece_tokenizer.piece_spans(part)
                    if piece_spans is None:
                        piece_spans = [(0, len(part))]
                        pieces = [UNK]
                    else:
                        pieces = self.wordpiece_tokenizer.tokenize_word(part)
                    for token, (start, end) in zip(pieces, piece_spans):
                        tokens.append(token)
                        first = spans[part_start + start]
                        last = spans[part_start + end - 1]
                        offsets.append((first[0], last[1]))
        return tokens, offsets

    def _normalize_with_spans(self, word, spans):
        """NFC + lower-case + strip accents of one word, keeping each character's source span."""
        nfc = unicodedata.normalize("NFC", word)
        lower = self.do_lower_case and nfc not in self.basic_tokenizer.never_split

        def transform(text):
            text = unicodedata.normalize("NFC", text)
            return strip_accents(text.lower()) if lower else text

        result = transform(word)
        if result == word:
            return result, spans
        return result, _align(word, spans, transform, result)

    # -- tokens and ids ------------------------------------------------------------------

    def convert_tokens_to_ids(self, tokens):
        """Ids of ``tokens`` (a token that is not in the vocabulary gets the id of [UNK])."""
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(token, self.unk_token_id) for token in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        """Tokens of ``ids``; ``skip_special_tokens`` leaves out [CLS], [SEP], [PAD]..."""
        if isinstance(ids, numbers.Integral):  # one id (python or NumPy integer)
            self._check_ids([int(ids)])
            return self.ids_to_tokens.get(int(ids), UNK)
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        return [self.ids_to_tokens.get(i, UNK) for i in ids]

    def _check_ids(self, ids):
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise InputError(
                    f"token id {i} is outside the vocabulary (ids go from 0 to {self.vocab_size - 1})",
                    hint="decode ids produced by this tokenizer's vocabulary",
                )

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Turn ids back into text, gluing ``##`` pieces to the piece before them.

        Like transformers, spaces before ``. ? ! ,`` and before ``'s n't 'm 've 're`` are removed.
        """
        tokens = self.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        if isinstance(tokens, str):
            tokens = [tokens]
        text = " ".join(tokens).replace(" ##", "").strip()
        return clean_up_tokenization(text)

    # -- model inputs --------------------------------------------------------------------

    def encode(
        self,
        text: str,
        text_pair: "str | None" = None,
        max_length: "int | None" = None,
        truncation=False,
        padding=False,
        return_offsets: bool = False,
    ) -> dict:
        """Model inputs for one text or one pair: ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``.

        Returns a dict of python lists: ``input_ids``, ``token_type_ids`` (0 for A, 1 for B)
        and ``attention_mask`` (0 on padding). With ``return_offsets=True`` it also holds
        ``offsets``: the ``(start, end)`` span of every token in its text, ``(0, 0)`` for
        [CLS], [SEP] and [PAD].
        """
        _check_text(text, "text")
        if text_pair is not None:
            _check_text(text_pair, "text_pair")
        truncation, padding = _check_strategies(truncation, padding, max_length)
        pair = text_pair is not None
        self._check_max_length(max_length, pair, truncation)

        if return_offsets:
            tokens_a, offsets_a = self.tokenize_with_offsets(text)
            tokens_b, offsets_b = self.tokenize_with_offsets(text_pair) if pair else ([], [])
        else:
            tokens_a, offsets_a = self.tokenize(text), None
            tokens_b, offsets_b = (self.tokenize(text_pair) if pair else []), None
        ids_a = self.convert_tokens_to_ids(tokens_a)
        ids_b = self.convert_tokens_to_ids(tokens_b) if pair else None

        if truncation is not None and max_length is not None:
            num_special = 3 if pair else 2
            total = len(ids_a) + (len(ids_b) if pair else 0) + num_special
            keep_a, keep_b = truncation_lengths(
                len(ids_a), len(ids_b) if pair else None, total - max_length, truncation
            )
            ids_a = ids_a[:keep_a]
            ids_b = ids_b[:keep_b] if pair else None
            if return_offsets:
                offsets_a = offsets_a[:keep_a]
                offsets_b = offsets_b[:keep_b] if pair else None

        encoding = self._with_special_tokens(ids_a, ids_b)
        if return_offsets:
            encoding["offsets"] = [(0, 0)] + offsets_a + [(0, 0)] + (offsets_b + [(0, 0)] if pair else [])
        if padding == "max_length" and max_length is not None:
            _pad(encoding, max_length, self.pad_token_id)
        return encoding

    def encode_batch(self, texts: "list[str]", text_pairs: "list[str] | None" = None, max_length: "int | None" = None,
                     truncation=False, padding="longest") -> dict:
        """Model inputs for a batch, as ``[batch, length]`` NumPy int64 arrays.

        ``padding="longest"`` (default) pads every row to the longest one; ``"max_length"``
        pads to ``max_length``; ``False`` needs all rows to have the same length already.
        """
        import numpy as np

        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InputError(
                f"encode_batch expects a list of str, got {type(texts).__name__}",
                hint="use encode() for a single text, or wrap it in a list",
            )
        if text_pairs is not None:
            if isinstance(text_pairs, str) or not isinstance(text_pairs, (list, tuple)):
                raise InputError(
                    f"text_pairs must be a list of str, got {type(text_pairs).__name__}",
                    hint="pass one second text per text, or None",
                )
            if len(text_pairs) != len(texts):
                raise InputError(
                    f"text_pairs has {len(text_pairs)} texts but texts has {len(texts)}",
                    hint="pass exactly one second text per text",
                )
        truncation, padding = _check_strategies(truncation, padding, max_length)
        if not texts:
            raise InputError("encode_batch got an empty list of texts", hint="pass at least one text")
        rows = []
        for index, text in enumerate(texts):
            pair = text_pairs[index] if text_pairs is not None else None
            rows.append(self.encode(text, pair, max_length=max_length, truncation=truncation or False))
        longest = max(len(row["input_ids"]) for row in rows)
        if padding == "longest":
            target = longest
        elif padding == "max_length":
            target = max_length  # rows already longer stay longer (then the check below fails)
        else:
            target = None
        if target is not None:
            for row in rows:
                _pad(row, target, self.pad_token_id)
        lengths = {len(row["input_ids"]) for row in rows}
        if len(lengths) > 1:
            raise InputError(
                f"the encoded texts have different lengths ({min(lengths)} to {max(lengths)} tokens) "
                "and cannot form one array",
                hint='use padding="longest" (the default), or truncation=True with padding="max_length"',
            )
        return {
            key: np.array([row[key] for row in rows], dtype=np.int64).reshape(len(rows), -1)
            for key in ("input_ids", "token_type_ids", "attention_mask")
        }

    def _with_special_tokens(self, ids_a, ids_b):
        """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` with token types and attention mask."""
        input_ids = [self.cls_token_id] + ids_a + [self.sep_token_id]
        token_type_ids = [0] * len(input_ids)
        if ids_b is not None:
            input_ids += ids_b + [self.sep_token_id]
            token_type_ids += [1] * (len(ids_b) + 1)
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": [1] * len(input_ids),
        }

    def _check_max_length(self, max_length, pair, truncation):
        if max_length is None:
            return
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise InputError(
                f"max_length must be an int, got {type(max_length).__name__}",
                hint="pass e.g. max_length=128",
            )
        needed = 3 if pair else 2
        if max_length < needed:
            raise InputError(
                f"max_length={max_length} is smaller than the {needed} special tokens "
                f"({'[CLS] A [SEP] B [SEP]' if pair else '[CLS] A [SEP]'}) every input needs",
                hint=f"use max_length >= {needed}",
            )


# ---------------------------------------------------------------------------------------
# Helpers of Tokenizer: validation, truncation, padding, decoding clean-up, offsets.
# ---------------------------------------------------------------------------------------


def encode_texts(tokenizer, texts, pairs, max_length, truncate):
    """The one truncation rule of every text-taking command: ([B, T] int64 arrays, tokens dropped).

    A text (or pair) longer than the model's ``max_length`` positions is refused, with the fix
    ``--truncate``; with ``truncate=True`` each row is cut to ``max_length`` tokens (pairs
    longest-first, as transformers) and the number of tokens dropped is returned.
    """
    pairs = list(pairs) if pairs is not None else None
    lengths = [len(tokenizer.encode(t, None if pairs is None else pairs[i])["input_ids"]) for i, t in enumerate(texts)]
    if max(lengths) > max_length and not truncate:
        raise InputError(
            f"the text is {max(lengths)} tokens long, the model reads at most {max_length} (max_position_embeddings)",
            f"pass --truncate to keep the first {max_length} tokens"
            + (" (cutting the longer text of a pair first, as transformers)" if pairs is not None else "")
            + ", or shorten the text",
        )
    batch = tokenizer.encode_batch(list(texts), pairs, max_length=max_length, truncation=True)
    return batch, sum(max(0, n - max_length) for n in lengths)


def _check_text(text, name):
    if not isinstance(text, str):
        raise InputError(
            f"{name} must be a str, got {type(text).__name__}",
            hint="decode bytes first (e.g. Tokenizer.read_text_file) and pass one string",
        )


def _strategy(name, value, strategies, default):
    """True -> the default strategy; False or None -> None; a strategy's name -> itself."""
    if value is True:
        return default
    if value is False or value is None:
        return None
    if value not in strategies:
        raise InputError(f"unknown {name} {value!r}", hint=f"use False, True or one of {', '.join(strategies)}")
    return value


def _check_strategies(truncation, padding, max_length):
    """Normalise ``truncation`` to None or a strategy name and ``padding`` to None or a name."""
    truncation = _strategy("truncation", truncation, TRUNCATION_STRATEGIES, default="longest_first")
    padding = _strategy("padding", padding, PADDING_STRATEGIES, default="longest")
    if padding == "max_length" and max_length is None:
        raise InputError(
            'padding="max_length" needs max_length',
            hint='pass max_length=..., or use padding="longest"',
        )
    return truncation, padding


def truncation_lengths(len_a, len_b, num_to_remove, strategy):
    """How many tokens of A and of B (None if no pair) to keep after removing ``num_to_remove``.

    Same arithmetic as transformers' ``truncate_sequences`` (tokens are cut from the right):
    - ``only_first`` (and ``longest_first`` without a pair): cut A only;
    - ``only_second``: cut B only (nothing happens without a pair);
    - ``longest_first`` with a pair: first cut the longer one down to the shorter one's
      length, then cut the rest evenly, A getting the smaller half.
    A sequence cut by more than its length becomes empty (the result is then still too long).
    """
    if num_to_remove <= 0:
        return len_a, len_b
    if strategy == "only_first" or (strategy == "longest_first" and len_b is None):
        return max(len_a - num_to_remove, 0), len_b
    if strategy == "longest_first":
        first_remove = min(abs(len_b - len_a), num_to_remove)
        second_remove = num_to_remove - first_remove
        if len_a > len_b:
            remove_a = first_remove + second_remove // 2
            remove_b = second_remove - second_remove // 2
        else:
            remove_a = second_remove // 2
            remove_b = first_remove + second_remove - second_remove // 2
        return max(len_a - remove_a, 0), max(len_b - remove_b, 0)
    if strategy == "only_second" and len_b:
        return len_a, max(len_b - num_to_remove, 0)
    return len_a, len_b


def _pad(encoding, length, pad_token_id):
    """Pad an encoding on the right to ``length`` tokens (no-op if already that long)."""
    missing = length - len(encoding["input_ids"])
    if missing <= 0:
        return
    encoding["input_ids"] = encoding["input_ids"] + [pad_token_id] * missing
    encoding["token_type_ids"] = encoding["token_type_ids"] + [0] * missing
    encoding["attention_mask"] = encoding["attention_mask"] + [0] * missing
    if "offsets" in encoding:
        encoding["offsets"] = encoding["offsets"] + [(0, 0)] * missing


def clean_up_tokenization(text):
    """Remove the spaces decoding leaves before common punctuation and English contractions."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def _words_with_spans(text, text_start):
    """Clean ``text`` and split it into words, remembering where each character came from.

    Yields ``(word, spans)`` where ``spans[i]`` is the ``(start, end)`` position (offset by
    ``text_start``) of the character ``word[i]`` in the original text.
    """
    word, spans = [], []
    for index, char in enumerate(text):
        position = text_start + index
        for out in _CLEAN_TABLE[ord(char)]:
            if out.isspace():  # the characters str.split() splits on
                if word:
                    yield "".join(word), spans
                    word, spans = [], []
            else:
                word.append(out)
                spans.append((position, position + 1))
    if word:
        yield "".join(word), spans


def _punctuation_parts(word):
    """``split_on_punctuation`` that also returns where each part starts in ``word``."""
    parts = []
    position = 0
    for part in split_on_punctuation(word):
        parts.append((part, position))
        position += len(part)
    return parts


def _align(word, spans, transform, result):
    """Source spans of the characters of ``result = transform(word)``.

    The word is cut into the smallest chunks that ``transform`` handles independently
    (``transform(chunk1) + transform(chunk2) + ... == result``); every character that a
    chunk turns into gets the span of the whole chunk. Words over 200 characters (which
    become [UNK] anyway unless punctuation splits them) get the span of the whole word.
    """
    whole = (spans[0][0], spans[-1][1])
    if len(word) > 200:
        return [whole] * len(result)
    out = []
    last_chunk = 0  # index in ``out`` of the first character of the last non-empty chunk
    start = 0
    done = 0  # characters of ``result`` already produced
    while start < len(word):
        end = start + 1
        while end < len(word):
            head = transform(word[start:end])
            if result.startswith(head, done) and transform(word[end:]) == result[done + len(head) :]:
                break
            end += 1
        head = transform(word[start:end])
        if head:
            out.extend([(spans[start][0], spans[end - 1][1])] * len(head))
            last_chunk = len(out) - len(head)
        elif out:  # a chunk that vanished (e.g. an accent): add it to the previous chunk
            new_end = spans[end - 1][1]
            out[last_chunk:] = [(first, new_end) for first, _ in out[last_chunk:]]
        done += len(head)
        start = end
    if len(out) != len(result):  # cannot happen if transform is consistent; stay safe
        return [whole] * len(result)
    return out
