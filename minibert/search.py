"""Semantic search over an embeddings file written by ``minibert encode --input``.

    minibert search embeddings.h5 "how do I read a file line by line" --top-k 5

The query is embedded with the same model, pooling and max length as the corpus (the model's
path and checksum are stored in the file; ``model=`` points elsewhere if it moved). The score
of a row is the cosine similarity of its vector with the query's: both have unit length, so
it is their dot product. All rows are scored, in blocks of ``block_rows`` (memory holds one
block), and the best ``top_k`` are kept: exact search, no index, no approximation. Ties are
broken by row order. Each hit's line is read from the input at its stored byte offset.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import FORMAT_NAME, Encoder, Settings, parse_line
from .errors import InputError
from .weights import file_sha256

# N = rows, H = hidden size, K = top_k

BLOCK_ROWS = 65536  # rows scored at a time: 65536 x 384 float32 = 96 MiB


@dataclass
class Hit:
    score: float  # cosine similarity with the query
    row: int  # row of /embeddings
    line_number: int  # 1-based line in the input
    byte_offset: int
    text: str  # the line's text (None when the input file cannot be read)


def top_k_scores(embeddings, query, top_k, block_rows=BLOCK_ROWS):  # [N, H] (array or h5py dataset), [H] -> [K], [K]
    """Rows and scores of the ``top_k`` largest ``embeddings @ query``, best first (ties: lower row first)."""
    query = np.asarray(query, np.float64)  # [H]
    best_rows = np.empty(0, np.int64)  # [<= K]
    best_scores = np.empty(0, np.float64)  # [<= K]
    for start in range(0, embeddings.shape[0], block_rows):
        block = np.asarray(embeddings[start : start + block_rows], np.float64)  # [b, H]
        scores = np.concatenate([best_scores, block @ query])  # [<= K + b]
        rows = np.concatenate([best_rows, np.arange(start, start + len(block))])  # [<= K + b]
        keep = np.lexsort((rows, -scores))[:top_k]  # by score descending, then row ascending
        best_rows, best_scores = rows[keep], scores[keep]
    return best_rows, best_scores


def read_line(settings, offset, line_number):
    """The text of the line starting at byte ``offset`` of the input (None if it cannot be read)."""
    try:
        with open(settings.input_path, "rb") as f:
            f.seek(offset)
            raw = f.readline().rstrip(b"\n")
    except OSError:
        return None
    try:
        return parse_line(raw, line_number, settings)
    except ValueError:
        return None


def open_embeddings(path):
    """The h5py file of an embeddings file and its Settings, or a clear error."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"embeddings file '{path}' does not exist",
            "write one with `minibert encode MODEL.h5 --input CORPUS --out " + str(path) + "`",
        )
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(
            f"{path}: not a readable HDF5 file ({e})", "pass a file written by `minibert encode --input`"
        ) from None
    fmt = f.attrs.get("format")
    if fmt != FORMAT_NAME:
        f.close()
        raise InputError(
            f"{path}: not a minibert embeddings file (format {fmt!r})",
            "pass a file written by `minibert encode --input`",
        )
    fields = Settings.__dataclass_fields__
    settings = Settings(
        **{k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items() if k in fields}
    )
    return f, settings


def check_model(settings, model):
    """Settings pointing at ``model`` (or the stored path), refusing a model other than the corpus's."""
    path = Path(model or settings.model_path)
    if not path.is_file():
        raise InputError(
            f"the model the embeddings were made with, '{path}', is not there", "pass its current path with --model"
        )
    if file_sha256(path) != settings.model_sha256:
        raise InputError(
            f"{path} is not the model the embeddings were made with "
            f"(its SHA-256 differs from {settings.model_sha256[:12]}...)",
            "pass that model with --model, or encode the corpus again with this one",
        )
    return Settings(**{**settings.__dict__, "model_path": str(path)})


def search(embeddings_path, query, top_k=10, model=None, block_rows=BLOCK_ROWS, truncate=False, encoder=None):
    """The ``top_k`` rows of the embeddings file most similar to ``query``, best first, as ``Hit``s."""
    if not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"top_k={top_k!r} must be a positive integer", "ask for --top-k 1 or more")
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query is empty", 'pass a text, e.g. minibert search embeddings.h5 "reading files"')
    f, settings = open_embeddings(embeddings_path)
    with f:
        if encoder is None:
            settings = check_model(settings, model)
            encoder = Encoder(Settings(**{**settings.__dict__, "truncate": bool(truncate)}))
        ids, _ = encoder.token_ids(query, "the query")
        q = encoder.embed([ids])[0]  # [H]
        rows, scores = top_k_scores(f["embeddings"], q, top_k, block_rows)  # [K], [K]
        line_numbers = f["line_numbers"][np.sort(rows)] if len(rows) else []
        offsets = f["byte_offsets"][np.sort(rows)] if len(rows) else []
        where = dict(zip(np.sort(rows).tolist(), zip(np.asarray(line_numbers).tolist(), np.asarray(offsets).tolist())))
    source = Path(settings.input_path)
    unchanged = source.is_file() and source.stat().st_size == settings.input_size  # else the offsets point nowhere
    hits = []
    for row, score in zip(rows.tolist(), scores.tolist()):
        line_number, offset = where[row]
        hits.append(
            Hit(score, row, line_number, offset, read_line(settings, offset, line_number) if unchanged else None)
        )
    return hits


def hits_json(hits):
    return json.dumps([h.__dict__ for h in hits], ensure_ascii=False, indent=1)
