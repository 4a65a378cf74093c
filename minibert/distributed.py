"""Encode a corpus past one machine: the windows of ``minibert.corpus`` run on a Dask cluster.

    minibert encode MODEL.h5 --input corpus.txt --out embeddings.h5 --dask local:2
    minibert encode MODEL.h5 --input corpus.txt --out embeddings.h5 --dask tcp://scheduler:8786

The client scans the input (SHA-256, line count, the byte offset of every window: byte ranges
that start and end at line boundaries) and hands each worker a partition, a run of whole
windows. The worker reads those bytes itself, encodes them with the model it loaded once (a
per-process cache, not per task) and writes one part file per window into ``OUT.parts/``,
which must be a directory every worker sees at the same path (as must the model and the
input). When every partition is done the client merges the parts in input order, exactly as
a one-process run does: the windows, and so the batches and the bits, are the same.

If a worker dies, Dask runs its partition again elsewhere; the rerun skips the windows whose
part is already written. Needs the optional extra: ``pip install "minibert[dask]"``.
"""

import os
import socket
from dataclasses import replace
from pathlib import Path

from .api import load
from .corpus import Encoder, encode_windows, part_path, run, window_lines
from .errors import InputError
from .tokenizer import Tokenizer

PARTITIONS_PER_WORKER = 4  # enough to balance uneven partitions and to lose little when a worker dies
INSTALL_HINT = "install the optional extra: pip install 'minibert[dask]' (dask and distributed)"


def need_distributed():
    try:
        import distributed
    except ImportError:
        raise InputError(
            "--dask needs the packages dask and distributed, which are not installed", INSTALL_HINT
        ) from None
    return distributed


def parse_spec(spec):
    """("local", N) for "local:N", or ("address", spec) for a scheduler address."""
    if spec.startswith("local:"):
        n = spec[len("local:") :]
        if not n.isdigit() or int(n) < 1:
            raise InputError(f"--dask {spec}: expected local:N with N >= 1 worker processes", "e.g. --dask local:2")
        return "local", int(n)
    if "://" not in spec:
        raise InputError(
            f"--dask {spec}: not local:N nor a scheduler address", "e.g. --dask local:2 or --dask tcp://scheduler:8786"
        )
    return "address", spec


def connect(spec):
    """(client, cluster) for "local:N" (a new LocalCluster of N one-thread worker processes)
    or a scheduler address such as "tcp://host:8786" (cluster is then None)."""
    kind, value = parse_spec(spec)  # a mistyped spec is named even where Dask is not installed
    distributed = need_distributed()
    if kind == "local":
        n = value
        cluster = distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            env={"NUMBA_NUM_THREADS": "1"},  # one core per worker; Dask already sets OPENBLAS/OMP_NUM_THREADS=1
        )
        return distributed.Client(cluster), cluster
    try:
        return distributed.Client(spec, timeout="30s"), None
    except (OSError, TimeoutError) as e:
        raise InputError(
            f"--dask {spec}: cannot reach the scheduler ({e})",
            "start it with `dask scheduler` and check the address and port",
        ) from None


# ---------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------

_MODELS = {}  # this process's loaded models: (path, sha256, dtype, backend) -> (model, tokenizer)
LOADS = 0  # how many times this process loaded a model file (reported back for the tests)


def worker_encoder(settings):
    """An Encoder for ``settings`` whose model is loaded at most once per worker process."""
    global LOADS
    key = (settings.model_path, settings.model_sha256, settings.dtype, settings.backend)
    if key not in _MODELS:
        LOADS += 1
        _MODELS[key] = (
            load(settings.model_path, dtype=settings.dtype, backend=settings.backend),
            Tokenizer.from_file(settings.model_path),
        )
    model, tokenizer = _MODELS[key]
    return Encoder(settings, model=model, tokenizer=tokenizer)


def encode_partition(job, windows):
    """Runs on a worker: encode the windows of one partition (skipping those already written)."""
    for what, path in (
        ("input", job.settings.input_path),
        ("model", job.settings.model_path),
        ("parts directory", job.parts),
    ):
        if not Path(path).exists():
            raise InputError(
                f"worker {socket.gethostname()} cannot see the {what} {path}",
                "put the input, the model and the output's directory on a filesystem every worker "
                "mounts at the same path (docs/scaling.md)",
            )
    todo = [k for k in windows if not part_path(job.parts, k).exists()]  # a rerun after a crash
    if todo:
        encode_windows(worker_encoder(job.settings), job, todo)
    return {"pid": os.getpid(), "loads": LOADS, "windows": list(windows), "encoded": todo}


# ---------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------


def partitions(windows, count):
    """Split a list of window indices into at most ``count`` runs of consecutive entries."""
    size = max(1, -(-len(windows) // max(count, 1)))
    return [windows[i : i + size] for i in range(0, len(windows), size)]


def encode_corpus(
    model_path,
    input_path,
    out,
    *,
    dask="local:2",
    resume=False,
    overwrite=False,
    progress=True,
    partitions_per_worker=PARTITIONS_PER_WORKER,
    on_submitted=None,
    **options,
):
    """``minibert.corpus.encode_corpus`` on a Dask cluster (``dask``: "local:N" or an address).

    Returns the same ``Report``; the file is identical, bit for bit, to a one-process run's.
    ``on_submitted(client, futures)`` is called once the partitions are submitted (tests use
    it to kill a worker).
    """
    parse_spec(dask)  # a bad spec or address fails before any work, named even without Dask
    need_distributed()

    def encode(job, bar):
        from distributed import as_completed

        client, cluster = connect(dask)
        try:
            workers = max(1, len(client.scheduler_info()["workers"]))
            shipped = replace(job, lock=None)  # the lock stays with the client
            futures = [
                client.submit(encode_partition, shipped, group, pure=False)
                for group in partitions(job.todo, workers * partitions_per_worker)
            ]
            if on_submitted is not None:
                on_submitted(client, futures)
            results = []
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(sum(window_lines(job.plan, job.settings, k) for k in results[-1]["windows"]))
            return results
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

    return run(model_path, input_path, out, encode, resume=resume, overwrite=overwrite, progress=progress, **options)
