"""The process the fuzz tests send mutated files to, under a hard memory limit (RLIMIT_AS).

    python tests/fuzz_worker.py ORIGINAL.h5 ORIGINAL.safetensors

Reads one request per line on stdin, ``{"kind": "h5" | "safetensors", "path": ...}``, and
answers one JSON line per request:

* ``{"outcome": "same"}``: the file loaded and gives what the original gives (for .h5: equal
  forward outputs, vocabulary and config; for .safetensors: the same tensors as the official
  ``safetensors`` package reads);
* ``{"outcome": "different", ...}``: it loaded but gives something else (a wrong answer);
* ``{"outcome": "minibert-error", ...}``: a ``MinibertError``;
* ``{"outcome": "other-exception", ...}``: any other exception, with its traceback.

A crash or a memory blow-up kills the process: the test sees no answer and fails.
"""

import json
import resource
import sys
import traceback

import numpy as np

import minibert
from minibert import MinibertError, hdf5, weights
from minibert.safetensors import read_safetensors

MEMORY_HEADROOM = 1 << 30  # bytes above the address space in use once everything is imported
IDS = np.array([[2, 10, 11, 12, 13, 3, 0], [2, 14, 15, 3, 0, 0, 0]])
MASK = (IDS != 0).astype(np.int64)


def h5_answer(path):
    model = minibert.load(path, backend="numpy")
    out = model(IDS, MASK).last_hidden_state
    tokens, lower = weights.read_vocab(path)
    return out, tokens, lower, model.config.to_dict()


def same_h5(a, b):
    return np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def safetensors_answer(path):
    return read_safetensors(path)


def same_tensors(ours, theirs):
    return ours.keys() == theirs.keys() and all(
        ours[k].dtype == theirs[k].dtype
        and ours[k].shape == theirs[k].shape
        and np.array_equal(ours[k], theirs[k], equal_nan=True)
        for k in ours
    )


def main(original_h5, original_safetensors):
    from safetensors.numpy import load_file

    hdf5.METADATA_TIMEOUT = 5.0
    expected_h5 = h5_answer(original_h5)
    read_safetensors(original_safetensors)
    load_file(original_safetensors)
    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (in_use + MEMORY_HEADROOM, in_use + MEMORY_HEADROOM))
    print(json.dumps({"ready": True, "memory_limit": in_use + MEMORY_HEADROOM}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["kind"] == "h5":
                same = same_h5(h5_answer(request["path"]), expected_h5)
            else:
                ours = safetensors_answer(request["path"])
                same = same_tensors(ours, load_file(request["path"]))  # never more lenient than the reference reader
            answer = {"outcome": "same" if same else "different"}
        except MinibertError as e:
            answer = {"outcome": "minibert-error", "message": e.message}
        except BaseException as e:  # noqa: BLE001 - exactly what the fuzz test looks for
            answer = {
                "outcome": "other-exception",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            }
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
