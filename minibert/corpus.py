"""Encode a whole corpus (one text per line) into an HDF5 file of sentence embeddings.

    minibert encode MODEL.h5 --input corpus.txt --out embeddings.h5

The road a line takes: bytes -> text (UTF-8; a JSONL row's field) -> ids (the tokenizer) ->
a batch of similar lengths -> the encoder -> pooled, L2-normalised vector -> its row.

- Windows. The input is cut into windows of ``window`` consecutive lines (4096 by default).
  Inside a window, texts are sorted by token count before batching (little padding) and the
  vectors are put back in input order. A window is the unit of everything else: it is
  written as one part file, it is what ``--resume`` skips, and a Dask partition is a run of
  whole windows. Because the windows depend only on the line numbers, every way of running
  (one process, resumed, Dask) builds the same batches and so the same bits.
- Parts. Each finished window is written to ``OUT.parts/window-<k>.h5`` (a temporary name,
  then an atomic rename, so a part is either complete or absent). ``manifest.json`` there
  records the settings; ``--resume`` checks them and skips the windows already written. At
  the end the parts are copied in order into ``OUT`` (again via a temporary name) and the
  directory is removed. Memory holds one window, never the corpus.
- Lines. A line ends at ``\\n`` (a trailing ``\\r`` is dropped; a UTF-8 BOM at the start of
  the file is dropped). Empty or blank lines are skipped: they get no row, and every row
  stores its line number and byte offset. Lines that are not UTF-8 (or JSONL rows that are
  not an object with a string ``field``) stop the run with the line number, or are skipped
  and listed with ``errors="skip"``. A line longer than ``max_length`` tokens stops the run
  unless ``truncate=True`` (then it keeps its first ``max_length`` tokens, [SEP] included).

The output, ``OUT`` (format "minibert-embeddings", version 1)::

    /embeddings            [N, H] float32, chunked; row i is one line's unit-length vector
    /line_numbers          [N] int64, 1-based line number of each row in the input
    /byte_offsets          [N] int64, where each row's line starts in the input
    /skipped_line_numbers  [S] int64, lines skipped with errors="skip"
    attrs: rows, line_count, empty_lines, skipped_lines, truncated_lines, tokens,
           input_path, input_sha256, input_size, input_format, field,
           model_path, model_sha256, model_config (JSON), pooling, normalized,
           max_length, truncate, batch_size, window, backend, dtype
"""

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .api import load
from .errors import InputError
from .heads import sentence_embeddings
from .inputs import DEFAULT_BACKEND
from .tokenizer import Tokenizer
from .version import __version__
from .weights import file_sha256, read_config

# N = rows (encoded lines), H = hidden size, B = batch, T = longest text of the batch in tokens

FORMAT_NAME = "minibert-embeddings"
FORMAT_VERSION = 1
WINDOW = 4096  # lines sorted together by length; also the unit of parts, resume and Dask partitions
BATCH_SIZE = 64
POOLINGS = ("mean", "cls")
ERROR_POLICIES = ("fail", "skip")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
SCAN_BLOCK = 1 << 22  # bytes read at a time when hashing and counting lines
OUTPUT_CHUNK_ROWS = 1024  # HDF5 chunk of /embeddings: [1024, H]


# ---------------------------------------------------------------------------------------
# Settings: everything that decides the output's bits (checked on --resume)
# ---------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What a run reads and how it encodes; two runs with equal settings write equal files."""

    model_path: str
    model_sha256: str
    model_config: str  # JSON of the model's BertConfig
    input_path: str
    input_sha256: str
    input_size: int
    input_format: str  # "text" (one text per line) or "jsonl" (one object per line)
    field: str  # the JSONL field holding the text ("" for text input)
    pooling: str  # "mean" (average of the tokens, as sentence-transformers) or "cls"
    max_length: int  # tokens per text, [CLS] and [SEP] included
    truncate: bool
    errors: str  # "fail" or "skip"
    batch_size: int
    window: int
    backend: str
    dtype: str
    sort_by_length: bool = True
    normalized: bool = True  # vectors are L2-normalised: cosine similarity is a dot product

    def mismatches(self, other):
        """Names of the settings that differ from ``other`` (``truncate`` may be switched on)."""
        ours, theirs = asdict(self), asdict(other)
        return [k for k in ours if ours[k] != theirs.get(k) and not (k == "truncate" and ours[k])]


@dataclass
class InputPlan:
    """The input cut into windows at line boundaries: window k holds lines k*W+1 .. (k+1)*W."""

    size: int
    sha256: str
    line_count: int
    starts: list  # byte offset where each window starts; the last window ends at ``size``

    def window_bytes(self, k):  # -> (start, end)
        return self.starts[k], self.starts[k + 1] if k + 1 < len(self.starts) else self.size

    @property
    def windows(self):
        return len(self.starts)


def check_options(batch_size, max_length, pooling, errors, window, max_positions):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size {batch_size!r} must be a positive integer", "pass e.g. --batch-size 64")
    if not isinstance(window, int) or window < 1:
        raise InputError(f"window {window!r} must be a positive integer", f"use the default, {WINDOW}")
    if pooling not in POOLINGS:
        raise InputError(f"unknown pooling {pooling!r}", f"use one of {', '.join(POOLINGS)}")
    if errors not in ERROR_POLICIES:
        raise InputError(f"unknown error policy {errors!r}", f"use one of {', '.join(ERROR_POLICIES)}")
    if not isinstance(max_length, int) or not 2 <= max_length <= max_positions:
        raise InputError(
            f"max length {max_length!r} is outside 2..{max_positions} (the model has {max_positions} positions)",
            f"pass --max-length between 2 and {max_positions}",
        )


def input_format(path, field):
    """("jsonl", field) for .jsonl/.ndjson files, ("text", "") otherwise."""
    if str(path).endswith(JSONL_SUFFIXES):
        return "jsonl", field or "text"
    if field:
        raise InputError(
            f"--field {field} is given but {path} is not a .jsonl file",
            "drop --field for a text file (one text per line), or name the file .jsonl",
        )
    return "text", ""


def make_settings(
    model_path,
    input_path,
    plan,
    *,
    pooling="mean",
    max_length=None,
    truncate=False,
    field=None,
    errors="fail",
    batch_size=BATCH_SIZE,
    window=WINDOW,
    backend=DEFAULT_BACKEND,
    dtype="float32",
    sort_by_length=True,
):
    config = read_config(model_path)
    max_length = config.max_position_embeddings if max_length is None else max_length
    check_options(batch_size, max_length, pooling, errors, window, config.max_position_embeddings)
    fmt, field = input_format(input_path, field)
    return Settings(
        model_path=str(Path(model_path).resolve()),
        model_sha256=file_sha256(model_path),
        model_config=json.dumps(config.to_dict(), sort_keys=True),
        input_path=str(Path(input_path).resolve()),
        input_sha256=plan.sha256,
        input_size=plan.size,
        input_format=fmt,
        field=field,
        pooling=pooling,
        max_length=max_length,
        truncate=bool(truncate),
        errors=errors,
        batch_size=batch_size,
        window=window,
        backend=backend,
        dtype=dtype,
        sort_by_length=bool(sort_by_length),
    )


# ---------------------------------------------------------------------------------------
# Reading the input
# ---------------------------------------------------------------------------------------


def scan_input(path, window=WINDOW):
    """One pass over the file: its SHA-256, size, line count and the byte offset of each window."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"input file '{path}' does not exist or is not a file",
            "pass a text file (one text per line) or a .jsonl file",
        )
    digest, size, newlines, starts = hashlib.sha256(), 0, 0, [0]
    last = b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(SCAN_BLOCK), b""):
            digest.update(block)
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n"))  # positions of "\n"
            # After the j-th newline of this block starts line newlines + j + 2 (1-based); a
            # window starts after every newline whose count is a multiple of the window.
            first = (-(newlines + 1)) % window
            starts.extend(int(size + j + 1) for j in ends[first::window])
            newlines += len(ends)
            size += len(block)
            last = block[-1:]
    line_count = newlines + (1 if size and last != b"\n" else 0)
    if line_count == 0:
        raise InputError(f"input file '{path}' is empty", "give a file with one text per line")
    starts = [s for s in starts if s < size]  # a file ending in "\n" opens no window at its end
    return InputPlan(size=size, sha256=digest.hexdigest(), line_count=line_count, starts=starts)


def read_window(path, start, end):
    """The raw lines of bytes [start, end) with their byte offsets, "\\n" removed."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()  # the split leaves an empty piece after the last "\n"
    offsets = np.cumsum([start] + [len(line) + 1 for line in lines[:-1]], dtype=np.int64)  # [n]
    return lines, offsets


def parse_line(raw, line_number, settings):
    """The text of one raw line; None for a blank line; raises ValueError if the line is bad."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"is not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
    if line_number == 1 and text.startswith("\ufeff"):
        text = text[1:]  # the byte-order mark some editors write
    if settings.input_format == "jsonl" and text.strip():
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"is not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict) or settings.field not in row:
            raise ValueError(f"has no field {settings.field!r}")
        text = row[settings.field]
        if not isinstance(text, str):
            raise ValueError(f"field {settings.field!r} is a {type(text).__name__}, not a string")
    return text if text.strip() else None


# ---------------------------------------------------------------------------------------
# Encoding one window
# ---------------------------------------------------------------------------------------


@dataclass
class WindowResult:
    """One window's rows, in input order, and its counts."""

    embeddings: np.ndarray  # [n, H] float32
    line_numbers: np.ndarray  # [n] int64
    byte_offsets: np.ndarray  # [n] int64
    lines: int  # lines read (rows + empty + skipped)
    empty: int = 0
    truncated: int = 0
    tokens: int = 0
    skipped_line_numbers: list = field(default_factory=list)


class Encoder:
    """A model and its tokenizer, loaded once, turning windows of lines into vectors."""

    def __init__(self, settings, model=None, tokenizer=None):
        self.settings = settings
        self.model = model or load(settings.model_path, dtype=settings.dtype, backend=settings.backend)
        self.tokenizer = tokenizer or Tokenizer.from_file(settings.model_path)

    def token_ids(self, text, where):
        """The ids of one text ([CLS] ... [SEP]), refusing or truncating a text that is too long.

        ``where`` names the text in the error, e.g. "corpus.txt: line 12".
        """
        s = self.settings
        ids = self.tokenizer.encode(text)["input_ids"]
        if len(ids) <= s.max_length:
            return ids, False
        if not s.truncate:
            raise InputError(
                f"{where} has {len(ids)} tokens, more than the max length {s.max_length}",
                f"pass --truncate to keep the first {s.max_length} tokens of long lines (the count is recorded)"
                + (
                    f", or raise --max-length (the model has {self.model.config.max_position_embeddings} positions)"
                    if s.max_length < self.model.config.max_position_embeddings
                    else ""
                ),
            )
        return self.tokenizer.encode(text, max_length=s.max_length, truncation=True)["input_ids"], True

    def embed(self, rows, on_batch=None):  # list of n id lists -> [n, H]
        """Pooled, L2-normalised vectors of ``rows``, batched by similar length, in the order given."""
        s = self.settings
        lengths = np.array([len(r) for r in rows])  # [n]
        order = np.argsort(lengths, kind="stable") if s.sort_by_length else np.arange(len(rows))  # [n]
        out = np.empty((len(rows), self.model.config.hidden_size), np.float32)  # [n, H]
        for start in range(0, len(rows), s.batch_size):
            index = order[start : start + s.batch_size]  # [B]
            T = int(lengths[index].max())
            input_ids = np.full((len(index), T), self.tokenizer.pad_token_id, np.int64)  # [B, T]
            attention_mask = np.zeros((len(index), T), np.int64)  # [B, T]
            for b, i in enumerate(index):
                input_ids[b, : lengths[i]] = rows[i]
                attention_mask[b, : lengths[i]] = 1
            batch = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": np.zeros_like(input_ids),
            }
            out[index] = sentence_embeddings(self.model, batch, pooling=s.pooling)  # [B, H]
            if on_batch is not None:
                on_batch(len(index), int(lengths[index].sum()))
        return out

    def encode_window(self, lines, offsets, first_line, on_batch=None):
        """Encode one window's raw lines (``first_line`` is the 1-based number of the first)."""
        s = self.settings
        rows, numbers, row_offsets, skipped = [], [], [], []
        empty = truncated = 0
        for i, raw in enumerate(lines):
            line_number = first_line + i
            try:
                text = parse_line(raw, line_number, s)
            except ValueError as problem:
                if s.errors == "fail":
                    raise InputError(
                        f"{s.input_path}: line {line_number} {problem}",
                        "fix or remove that line, or pass --errors skip to skip bad lines "
                        "(they are listed in the output)",
                    ) from None
                skipped.append(line_number)
                continue
            if text is None:
                empty += 1
                continue
            ids, was_cut = self.token_ids(text, f"{s.input_path}: line {line_number}")
            truncated += was_cut
            rows.append(ids)
            numbers.append(line_number)
            row_offsets.append(offsets[i])
        H = self.model.config.hidden_size
        embeddings = self.embed(rows, on_batch) if rows else np.empty((0, H), np.float32)  # [n, H]
        return WindowResult(
            embeddings=embeddings,
            line_numbers=np.array(numbers, np.int64),
            byte_offsets=np.array(row_offsets, np.int64),
            lines=len(lines),
            empty=empty,
            truncated=truncated,
            tokens=sum(map(len, rows)),
            skipped_line_numbers=skipped,
        )


# ---------------------------------------------------------------------------------------
# Parts: one HDF5 file per finished window, then one merged output
# ---------------------------------------------------------------------------------------


def parts_dir(out):
    return Path(str(out) + ".parts")


def part_path(directory, k):
    return Path(directory) / f"window-{k:08d}.h5"


def atomic_h5(path):
    """A temporary path beside ``path`` (unique, created exclusively) for writing before a rename."""
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=Path(path).name + ".", suffix=".partial")
    os.close(fd)
    return Path(tmp)


def commit(tmp, path):
    """fsync ``tmp`` and rename it to ``path``: the file appears complete or not at all."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_part(directory, k, result):
    import h5py

    path = part_path(directory, k)
    tmp = atomic_h5(path)
    with h5py.File(tmp, "w") as f:
        f.create_dataset("embeddings", data=result.embeddings)
        f.create_dataset("line_numbers", data=result.line_numbers)
        f.create_dataset("byte_offsets", data=result.byte_offsets)
        f.create_dataset("skipped_line_numbers", data=np.array(result.skipped_line_numbers, np.int64))
        for key in ("lines", "empty", "truncated", "tokens"):
            f.attrs[key] = getattr(result, key)
        f.attrs["window"] = k
    commit(tmp, path)
    return path


def write_manifest(directory, settings, plan):
    path = Path(directory) / "manifest.json"
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(
        json.dumps({"settings": asdict(settings), "windows": plan.windows, "line_count": plan.line_count}, indent=1)
    )
    os.replace(tmp, path)


def read_manifest(directory):
    path = Path(directory) / "manifest.json"
    try:
        d = json.loads(path.read_text())
        return Settings(**d["settings"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(
            f"{directory}: cannot read the interrupted run's manifest ({e})", "start again with --overwrite"
        ) from None


def done_windows(directory, plan):
    """Indices of the windows whose part file is already written."""
    return [k for k in range(plan.windows) if part_path(directory, k).exists()]


def merge_parts(directory, plan, settings, out, hidden_size):
    """Copy the parts in window order into ``out`` (via a temporary file); return the totals."""
    import h5py

    paths = [part_path(directory, k) for k in range(plan.windows)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise InputError(
            f"{directory}: {len(missing)} window part(s) missing, e.g. {missing[0]}",
            "run the same command again with --resume",
        )
    totals = dict(rows=0, lines=0, empty=0, truncated=0, tokens=0)
    for p in paths:
        with h5py.File(p, "r") as f:
            totals["rows"] += f["embeddings"].shape[0]
            for key in ("lines", "empty", "truncated", "tokens"):
                totals[key] += int(f.attrs[key])
    if totals["lines"] != plan.line_count:
        raise InputError(
            f"{directory}: the parts hold {totals['lines']} lines, the input {plan.line_count}",
            "start again with --overwrite",
        )
    N = totals["rows"]
    tmp = atomic_h5(out)
    try:
        with h5py.File(tmp, "w") as f:
            embeddings = f.create_dataset(
                "embeddings",
                shape=(N, hidden_size),
                dtype=np.float32,
                chunks=(OUTPUT_CHUNK_ROWS, hidden_size),
                maxshape=(None, hidden_size),
            )  # [N, H]
            line_numbers = f.create_dataset("line_numbers", shape=(N,), dtype=np.int64)  # [N]
            byte_offsets = f.create_dataset("byte_offsets", shape=(N,), dtype=np.int64)  # [N]
            skipped, row = [], 0
            for p in paths:
                with h5py.File(p, "r") as part:
                    n = part["embeddings"].shape[0]
                    embeddings[row : row + n] = part["embeddings"][()]
                    line_numbers[row : row + n] = part["line_numbers"][()]
                    byte_offsets[row : row + n] = part["byte_offsets"][()]
                    skipped.extend(part["skipped_line_numbers"][()].tolist())
                    row += n
            f.create_dataset("skipped_line_numbers", data=np.array(skipped, np.int64))
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["minibert_version"] = __version__
            f.attrs["rows"] = N
            f.attrs["line_count"] = plan.line_count
            f.attrs["empty_lines"] = totals["empty"]
            f.attrs["skipped_lines"] = len(skipped)
            f.attrs["truncated_lines"] = totals["truncated"]
            f.attrs["tokens"] = totals["tokens"]
            for key, value in asdict(settings).items():
                f.attrs[key] = value
        commit(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shutil.rmtree(directory)
    return totals | {"skipped": len(skipped)}


# ---------------------------------------------------------------------------------------
# A run: prepare (checks, plan, parts directory), encode the windows, merge
# ---------------------------------------------------------------------------------------


@dataclass
class Job:
    settings: Settings
    plan: InputPlan
    out: Path
    parts: Path
    todo: list  # window indices still to encode
    lock: object = None  # the open lock file: one run per output at a time

    @property
    def done(self):
        """Windows already written (by an interrupted run) when this run started."""
        todo = set(self.todo)
        return [k for k in range(self.plan.windows) if k not in todo]

    def progress(self, enabled):
        """A Progress counter starting at the lines of the windows already done."""
        return Progress(
            self.plan.line_count, sum(window_lines(self.plan, self.settings, k) for k in self.done), enabled
        )

    def release(self):
        """Unlock the parts directory; remove it if no window was finished (nothing to resume)."""
        if self.lock is not None:
            if not any(self.parts.glob("window-*.h5")) and self.parts.exists():
                shutil.rmtree(self.parts)
            self.lock.close()
            self.lock = None


def read_embeddings_attrs(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return dict(f.attrs)
    except OSError as e:
        raise InputError(
            f"{path}: not a readable HDF5 file ({e})", "pass a file written by `minibert encode --input`"
        ) from None


def prepare(model_path, input_path, out, *, resume=False, overwrite=False, **options):
    """Check the options and the output, scan the input, create (or reopen) the parts directory."""
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other", "pass one of them")
    out = Path(out)
    if out.is_dir():
        raise InputError(f"output '{out}' is a directory", "pass a file name such as embeddings.h5")
    if not out.parent.is_dir():
        raise InputError(
            f"the directory of the output '{out}' does not exist", f"create it first: mkdir -p {out.parent}"
        )
    window = options.get("window", WINDOW)
    plan = scan_input(input_path, window)
    settings = make_settings(model_path, input_path, plan, **options)
    parts = parts_dir(out)
    if out.exists() and not overwrite:
        if not resume:
            raise InputError(
                f"output '{out}' exists", "pass --overwrite to replace it, or --resume to finish an interrupted run"
            )
        if not parts.exists():  # --resume of a finished run: nothing to do, if it is this run
            attrs = read_embeddings_attrs(out)
            stored = {k: attrs.get(k) for k in asdict(settings)}
            if attrs.get("format") == FORMAT_NAME and not settings.mismatches(Settings(**stored)):
                return None
            raise InputError(
                f"output '{out}' exists and was not made with these settings and input",
                "pass --overwrite to replace it",
            )
    if parts.exists() and not (resume or overwrite):
        raise InputError(
            f"'{parts}' holds the parts of an interrupted run",
            "pass --resume to continue it, or --overwrite to start again",
        )
    if parts.exists() and overwrite:
        shutil.rmtree(parts)
    parts.mkdir(exist_ok=True)
    lock = open(parts / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise InputError(f"another run is writing {out} (it holds {parts / 'lock'})", "wait for it to finish") from None
    if (parts / "manifest.json").exists():
        stored = read_manifest(parts)
        differ = settings.mismatches(stored)
        if differ:
            lock.close()
            detail = ", ".join(f"{k}: {getattr(stored, k)!r} then, {getattr(settings, k)!r} now" for k in differ)
            raise InputError(
                f"cannot resume {out}: the settings differ from the interrupted run's ({detail})",
                "run with the same model, input and options, or pass --overwrite to start again",
            )
    write_manifest(parts, settings, plan)
    done = set(done_windows(parts, plan))
    todo = [k for k in range(plan.windows) if k not in done]
    return Job(settings, plan, out, parts, todo, lock)


def window_lines(plan, settings, k):
    """How many lines window k holds."""
    return min(settings.window, plan.line_count - k * settings.window)


def progress_bar(total, initial, enabled):
    """A tqdm bar on stderr counting lines (lines/s and ETA; tokens/s in the postfix), or None.

    Shown only when ``enabled`` and stderr is a terminal, and when tqdm is installed.
    """
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        print("(no progress bar: pip install tqdm, or 'minibert[corpus]')", file=sys.stderr)
        return None
    size = shutil.get_terminal_size()  # 80 x 24 when the terminal reports 0 x 0, where tqdm would draw nothing
    return tqdm(
        total=total,
        initial=initial,
        unit=" lines",
        unit_scale=True,
        file=sys.stderr,
        smoothing=0.05,
        ncols=size.columns,
        nrows=size.lines,
    )


class Progress:
    """Counts lines and tokens for the bar; the bar itself is optional."""

    def __init__(self, total, initial, enabled):
        self.bar = progress_bar(total, initial, enabled)
        self.tokens = 0
        self.start = time.perf_counter()

    def update(self, lines, tokens=0):
        self.tokens += tokens
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tokens/s", refresh=False)
            self.bar.update(lines)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@dataclass
class Report:
    """What a finished run did (``None`` fields when the output was already complete)."""

    out: Path
    rows: int
    line_count: int
    empty: int
    skipped: int
    truncated: int
    tokens: int
    seconds: float
    resumed_windows: int = 0  # windows found done at the start (-1: the output was already complete)
    workers: list = None  # with Dask: what each partition's task reported
    merge_seconds: float = 0.0  # of ``seconds``: copying the parts into the output

    @property
    def lines_per_second(self):
        return self.line_count / self.seconds if self.seconds else float("nan")


def finish(job, started):
    merge_started = time.perf_counter()
    totals = merge_parts(
        job.parts, job.plan, job.settings, job.out, json.loads(job.settings.model_config)["hidden_size"]
    )
    return Report(
        out=job.out,
        rows=totals["rows"],
        line_count=job.plan.line_count,
        empty=totals["empty"],
        skipped=totals["skipped"],
        truncated=totals["truncated"],
        tokens=totals["tokens"],
        seconds=time.perf_counter() - started,
        resumed_windows=len(job.done),
        merge_seconds=time.perf_counter() - merge_started,
    )


def already_complete(out):
    attrs = read_embeddings_attrs(out)
    return Report(
        out=Path(out),
        rows=int(attrs["rows"]),
        line_count=int(attrs["line_count"]),
        empty=int(attrs["empty_lines"]),
        skipped=int(attrs["skipped_lines"]),
        truncated=int(attrs["truncated_lines"]),
        tokens=int(attrs["tokens"]),
        seconds=0.0,
        resumed_windows=-1,
    )


def encode_windows(encoder, job, windows, progress=None):
    """Encode the given windows one after the other, writing each one's part."""
    for k in windows:
        start, end = job.plan.window_bytes(k)
        lines, offsets = read_window(job.settings.input_path, start, end)
        on_batch = None if progress is None else progress.update
        result = encoder.encode_window(lines, offsets, first_line=k * job.settings.window + 1, on_batch=on_batch)
        write_part(job.parts, k, result)
        if progress is not None:
            progress.update(result.empty + len(result.skipped_line_numbers))


def run(model_path, input_path, out, encode, *, resume=False, overwrite=False, progress=True, **options):
    """Prepare the job, call ``encode(job, bar)`` on the windows still to do, merge: the frame
    shared by one process (``encode_corpus``) and Dask (``minibert.distributed``)."""
    started = time.perf_counter()
    job = prepare(model_path, input_path, out, resume=resume, overwrite=overwrite, **options)
    if job is None:
        return already_complete(out)
    try:
        bar = job.progress(progress)
        try:
            details = encode(job, bar)
        finally:
            bar.close()
        report = finish(job, started)
        report.workers = details
        return report
    finally:
        job.release()


def encode_corpus(model_path, input_path, out, *, resume=False, overwrite=False, progress=True, **options):
    """Encode every line of ``input_path`` with the model at ``model_path`` into ``out`` (HDF5).

    ``options``: pooling ("mean" or "cls"), max_length (default: the model's positions),
    truncate, field (JSONL), errors ("fail" or "skip"), batch_size, window, backend, dtype,
    sort_by_length. Returns a ``Report``. See the module docstring for the file's contents.
    """

    def encode(job, bar):
        encode_windows(Encoder(job.settings), job, job.todo, bar)

    return run(model_path, input_path, out, encode, resume=resume, overwrite=overwrite, progress=progress, **options)
