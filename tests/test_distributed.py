"""`minibert encode --dask`: a LocalCluster of 2 worker processes (one thread each) writes the
same file, bit for bit, as one process; a worker killed mid-run changes nothing."""

import os
import signal
import time
from pathlib import Path

import pytest

from minibert import distributed
from minibert.corpus import encode_corpus

from corpus_helpers import assert_same_file, seeded_model, write_corpus

pytestmark = pytest.mark.slow

WINDOW = 1024  # small windows: 20 of them, so 2 workers get several partitions each


@pytest.fixture(scope="module")
def cluster():
    """What `--dask local:2` starts: a LocalCluster of 2 worker processes with 1 thread each.

    The tests reach it through its address, as `--dask tcp://...` reaches a real cluster.
    """
    pytest.importorskip("distributed")  # the dev extra installs it (CI); the core-only run has no Dask
    client, cluster = distributed.connect("local:2")
    client.close()
    assert len(cluster.workers) == 2 and all(w.nthreads == 1 for w in cluster.workers.values())
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A 20,000-line corpus, a tiny seeded model, and the one-process encoding of the corpus."""
    root = tmp_path_factory.mktemp("dask")
    model = seeded_model(root / "tiny.h5")
    corpus = write_corpus(root / "corpus.txt", 20_000)
    encode_corpus(model, corpus, root / "single.h5", window=WINDOW, progress=False)
    return model, corpus, root / "single.h5"


def test_two_workers_write_the_one_process_file_loading_the_model_once_each(cluster, job, tmp_path):
    model, corpus, single = job
    report = distributed.encode_corpus(
        model, corpus, tmp_path / "dask.h5", dask=cluster.scheduler_address, window=WINDOW, progress=False
    )
    assert_same_file(tmp_path / "dask.h5", single)
    assert report.rows == 20_000 and not (tmp_path / "dask.h5.parts").exists()
    partitions = report.workers
    assert len(partitions) == 7  # 20 windows cut for 2 workers x 4 partitions: runs of 3 windows
    assert sorted(k for p in partitions for k in p["windows"]) == list(range(20))
    pids = {p["pid"] for p in partitions}
    assert len(pids) == 2  # both workers took part
    for pid in pids:  # each process loaded the model once, though it ran several partitions
        assert max(p["loads"] for p in partitions if p["pid"] == pid) == 1
        assert sum(p["pid"] == pid for p in partitions) >= 2


def test_a_killed_worker_changes_nothing(cluster, job, tmp_path):
    model, corpus, single = job
    out = tmp_path / "dask.h5"
    killed = []

    def kill_a_worker(client, futures):
        parts = Path(str(out) + ".parts")
        deadline = time.monotonic() + 120
        while not any(parts.glob("window-*.h5")):  # mid-run: some windows written, most not
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pid = next(iter(client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    report = distributed.encode_corpus(
        model, corpus, out, dask=cluster.scheduler_address, window=WINDOW, progress=False, on_submitted=kill_a_worker
    )
    assert_same_file(out, single)
    assert killed
    assert sorted(k for p in report.workers for k in p["windows"]) == list(range(20))
