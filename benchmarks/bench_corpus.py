"""Corpus encoding: speed against sentence-transformers, the length-sorting speed-up, memory,
and Dask with 1 and 2 workers. Every figure in docs/corpus.md and docs/scaling.md comes from here.

    python benchmarks/bench_corpus.py speed  [--lines 4000] [--reps 2]   # MiniLM: minibert vs sentence-transformers
    python benchmarks/bench_corpus.py memory [--sizes 10000 1000000]    # peak RSS of one run per size
    python benchmarks/bench_corpus.py dask   [--lines 100000]            # 1 process, Dask 1 worker, 2 workers

speed: all-MiniLM-L6-v2 (real weights), max length 128, truncation on, 2 threads. minibert
is timed end to end as `minibert encode --input` runs (hash the input and the model, load
the model, read, tokenize, encode, write and merge the HDF5 parts), at its defaults
(batch 64, windows of 4096 lines sorted by length) and with sorting off; sentence-transformers
(PyTorch) is timed on `model.encode(lines)` at its defaults (batch 32, sorted by length over
the whole list, lines already in memory, model already loaded). Runs alternate
(minibert, unsorted, sentence-transformers, ...) so machine noise hits all alike, after a
warm-up of both on 256 lines; the best of ``--reps`` is reported. The vectors are compared
(max |minibert - sentence-transformers|).

memory and dask use a seeded random model with the real uncased vocabulary (``--model tiny``:
H=32, L=2, the tests' model, the default for memory; ``--model bert-tiny``: bert-tiny's shape,
L=2, H=128, A=2, the default for dask), on lines of the standard library's files.

Results: benchmarks/results/<UTC date>-corpus-<mode>.json (with the load average: the machine
may be shared). Needs the bench extra (sentence-transformers, torch) and the dask extra.
"""

import os

# Read by OpenBLAS when NumPy loads: this script's own process measures with OpenBLAS's own
# choices for this CPU (the shell may set them for other work). Set before importing numpy.
for _name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_name, None)
# Unlike benchmarks/bench.py, the thread pools keep their default waiting (each library at its
# defaults): a run here lasts seconds, so a pool still spinning after the previous engine's
# run costs nothing measurable, while making OpenBLAS's threads sleep between the encoder's
# many small products would slow minibert down.

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # run from a checkout; the corpus helpers live in tests/
import minibert  # noqa: E402
from minibert.corpus import encode_corpus  # noqa: E402

from corpus_helpers import seeded_model, write_corpus  # noqa: E402
from tokenizer_corpus import vocab_path  # noqa: E402

THREADS = 2
RESULTS = ROOT / "benchmarks" / "results"


def machine():
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "minibert": minibert.__version__,
        "command": " ".join(sys.argv),
    }


def save(mode, record):
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}-corpus-{mode}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


def minilm_dir():
    return Path(vocab_path()).parent


def h5_rows(path):
    import h5py

    with h5py.File(path, "r") as f:
        return f["embeddings"][()]


# ---------------------------------------------------------------------------------------
# speed: minibert against sentence-transformers, sorted against unsorted
# ---------------------------------------------------------------------------------------


def speed(args):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    model_h5 = minibert.convert(minilm_dir(), work / "minilm.h5")
    corpus = write_corpus(work / "corpus.txt", args.lines)
    lines = Path(corpus).read_text(encoding="utf-8").splitlines()
    st = SentenceTransformer(str(minilm_dir()), device="cpu")
    st.max_seq_length = args.max_length

    def run_minibert(sort, corpus=corpus):
        out = work / ("out.h5" if sort else "out-unsorted.h5")
        report = encode_corpus(
            model_h5,
            corpus,
            out,
            overwrite=True,
            progress=False,
            max_length=args.max_length,
            truncate=True,
            sort_by_length=sort,
        )
        return report.seconds, report.tokens

    def run_st(lines=lines):
        start = time.perf_counter()
        vectors = st.encode(lines, convert_to_numpy=True)
        return time.perf_counter() - start, vectors

    # Warm-up on 256 lines: Numba's cache, PyTorch's first calls.
    run_minibert(True, corpus=write_corpus(work / "warm.txt", 256)), run_st(lines[:256])
    times = {"minibert": [], "minibert-unsorted": [], "sentence-transformers": []}
    for _ in range(args.reps):
        seconds, tokens = run_minibert(True)
        times["minibert"].append(seconds)
        times["minibert-unsorted"].append(run_minibert(False)[0])
        seconds_st, vectors = run_st()
        times["sentence-transformers"].append(seconds_st)
        print({k: round(v[-1], 2) for k, v in times.items()}, "load", os.getloadavg()[0], flush=True)
    diff = float(np.abs(h5_rows(work / "out.h5") - vectors).max())
    rows = {}
    for name, ts in times.items():
        best = min(ts)
        rows[name] = {
            "seconds": ts,
            "best_seconds": best,
            "lines_per_s": len(lines) / best,
            "tokens_per_s": tokens / best,
        }
    ratio = rows["minibert"]["lines_per_s"] / rows["sentence-transformers"]["lines_per_s"]
    sorting = rows["minibert"]["lines_per_s"] / rows["minibert-unsorted"]["lines_per_s"]
    print(f"{len(lines)} lines, {tokens} tokens (max length {args.max_length}), best of {args.reps}:")
    for name, row in rows.items():
        print(
            f"  {name:<22} {row['best_seconds']:7.2f} s  {row['lines_per_s']:8.1f} lines/s"
            f"  {row['tokens_per_s']:9.0f} tokens/s"
        )
    print(
        f"  minibert / sentence-transformers: {ratio:.2f}x lines/s; sorted / unsorted: {sorting:.2f}x; "
        f"max |minibert - sentence-transformers| = {diff:.1e}"
    )
    import sentence_transformers

    save(
        "speed",
        {
            "machine": machine(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "lines": len(lines),
            "tokens": tokens,
            "max_length": args.max_length,
            "rows": rows,
            "ratio_minibert_to_st": ratio,
            "sorting_speedup": sorting,
            "max_abs_diff": diff,
        },
    )


# ---------------------------------------------------------------------------------------
# memory: peak RSS for 10k and 1M lines, each in a fresh process
# ---------------------------------------------------------------------------------------


MODELS = {  # seeded random, real uncased vocabulary
    "bert-tiny": dict(hidden_size=128, layers=2, heads=2, max_positions=512),  # bert-tiny's shape
    "tiny": dict(hidden_size=32, layers=2, heads=2, max_positions=128),  # the tests' model
}


def seeded(work, name):
    return seeded_model(work / f"{name}.h5", **MODELS[name])


def memory_child(args):
    """One run in this fresh process; prints JSON with its peak RSS."""
    report = encode_corpus(
        args.model, args.corpus, args.out, overwrite=True, progress=False, max_length=128, truncate=True
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(
        json.dumps(
            {
                "lines": report.line_count,
                "rows": report.rows,
                "seconds": report.seconds,
                "lines_per_s": report.lines_per_second,
                "peak_rss_mib": peak_mib,
                "output_mib": os.path.getsize(args.out) / 2**20,
            }
        )
    )


def memory(args):
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-memory-"))
    model = seeded(work, args.model)
    rows = []
    for n in args.sizes:
        corpus = write_corpus(work / f"corpus-{n}.txt", n)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "memory-child",
                "--model",
                str(model),
                "--corpus",
                str(corpus),
                "--out",
                str(work / f"out-{n}.h5"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1]) | {"input_mib": os.path.getsize(corpus) / 2**20}
        rows.append(row)
        print(
            f"{n:>9} lines: peak RSS {row['peak_rss_mib']:.0f} MiB, input {row['input_mib']:.1f} MiB, "
            f"output {row['output_mib']:.1f} MiB, {row['seconds']:.0f} s ({row['lines_per_s']:.0f} lines/s), "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        (work / f"out-{n}.h5").unlink()
        corpus.unlink()
    save("memory", {"machine": machine(), "model": args.model, "shape": MODELS[args.model], "rows": rows})


# ---------------------------------------------------------------------------------------
# dask: one process, LocalCluster with 1 and 2 one-thread workers
# ---------------------------------------------------------------------------------------


def dask(args):
    import h5py

    from minibert import distributed

    work = Path(tempfile.mkdtemp(prefix="bench-corpus-dask-"))
    model = seeded(work, args.model)
    corpus = write_corpus(work / "corpus.txt", args.lines)
    rows = {}
    report = encode_corpus(model, corpus, work / "single.h5", progress=False, max_length=128, truncate=True)
    rows["one process (2 BLAS threads)"] = report
    for workers in (1, 2):
        client, cluster = distributed.connect(f"local:{workers}")  # started outside the timing
        client.close()
        report = distributed.encode_corpus(
            model,
            corpus,
            work / f"dask{workers}.h5",
            dask=cluster.scheduler_address,
            progress=False,
            max_length=128,
            truncate=True,
        )
        cluster.close()
        rows[f"Dask, {workers} worker(s) x 1 thread"] = report
        assert np.array_equal(h5_rows(work / f"dask{workers}.h5"), h5_rows(work / "single.h5")), "Dask output differs"
    with h5py.File(work / "single.h5") as f:
        windows, size = -(-args.lines // int(f.attrs["window"])), f["embeddings"].nbytes
    record = {}
    for name, r in rows.items():
        record[name] = {
            "seconds": r.seconds,
            "merge_seconds": r.merge_seconds,
            "lines_per_s": args.lines / r.seconds,
            "partitions": len(r.workers or []),
        }
        print(
            f"  {name:<32} {r.seconds:7.1f} s  {args.lines / r.seconds:8.0f} lines/s  "
            f"(merge {r.merge_seconds:.2f} s, {windows} windows)"
        )
    print(f"  {size / 2**20:.0f} MiB of vectors; identical outputs; load {os.getloadavg()[0]:.1f}")
    save(
        "dask",
        {
            "machine": machine(),
            "lines": args.lines,
            "windows": windows,
            "model": args.model,
            "shape": MODELS[args.model],
            "rows": record,
            "embeddings_mib": size / 2**20,
        },
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--lines", type=int, default=4000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--max-length", type=int, default=128)
    p = sub.add_parser("memory")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--model", choices=sorted(MODELS), default="tiny")
    p = sub.add_parser("memory-child")
    p.add_argument("--model")
    p.add_argument("--corpus")
    p.add_argument("--out")
    p = sub.add_parser("dask")
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--model", choices=sorted(MODELS), default="bert-tiny")
    args = parser.parse_args()
    {"speed": speed, "memory": memory, "memory-child": memory_child, "dask": dask}[args.mode](args)


if __name__ == "__main__":
    main()
