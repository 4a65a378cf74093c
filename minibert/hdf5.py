"""Opening HDF5 files that may be damaged or hostile: the checks shared by weights and traces.

HDF5 can make a file read bytes from elsewhere: an external link points to an object in
another file, external storage keeps a dataset's bytes in other files (any file on the
machine), a virtual dataset maps other files' datasets. minibert's files never use them, so
they are refused. A dataset's declared shape and its storage are checked against the file's
actual size before any byte of it is read, so a lying header cannot make us allocate memory
the file does not back.

HDF5 itself can loop for minutes (or allocate without bound) on damaged metadata, deep in C
where Python cannot interrupt it. So readers first run their metadata pass in a forked child
process (``bounded``) with a time limit and a memory limit; only when it finishes cleanly does
the caller read the same structures itself, then the data.
"""

import json
import os
import select
import signal
import time
import warnings
from pathlib import Path

from .errors import MinibertError

# What h5py raises on damaged metadata, besides OSError (KeyError: an object that vanished,
# RuntimeError/ValueError/TypeError: structures HDF5 cannot decode).
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, IndexError, OverflowError, UnicodeDecodeError)


def open_file(path, error, hint):
    """Open an HDF5 file for reading; a missing, non-file or unreadable path raises ``error``."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise error(f"{path}: file not found", hint)
    if not path.is_file():
        raise error(
            f"{path}: is a directory, not an HDF5 file" if path.is_dir() else f"{path}: not a regular file", hint
        )
    try:
        return h5py.File(path, "r", locking=False)
    except H5_ERRORS as e:
        raise error(f"{path}: not a readable HDF5 file ({e})", hint) from None


def members(group, path, error, hint):
    """Name -> object of a group's members, refusing soft and external links (hard links only)."""
    import h5py

    out = {}
    for name in group.keys():
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            kind = (
                "an external link to another file"
                if isinstance(link, h5py.ExternalLink)
                else f"a {type(link).__name__}"
            )
            raise error(
                f"{path}: {group.name.rstrip('/')}/{name} is {kind}; minibert files hold their data themselves", hint
            )
        out[name] = group[name]
    return out


def check_dataset(d, path, error, hint):
    """Refuse a dataset whose bytes would come from outside the file or exceed the file's size.

    Accepted: contiguous or compact storage, no filters, no external files, not virtual, and
    (contiguous) a stored extent that lies inside the file. Returns its size in bytes.
    """
    import h5py

    where = f"{path}: dataset {d.name}"
    dcpl = d.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise error(f"{where} is a virtual dataset (it maps data from other files)", hint)
    if dcpl.get_external_count() > 0:
        raise error(f"{where} keeps its bytes in external files", hint)
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT) or dcpl.get_nfilters() > 0:
        raise error(f"{where} is chunked or filtered; minibert writes plain contiguous datasets", hint)
    nbytes = int(d.dtype.itemsize) * _product(d.shape)
    variable = (
        h5py.check_vlen_dtype(d.dtype) is not None
        or h5py.check_string_dtype(d.dtype) is not None
        and d.dtype.kind == "O"
    )
    file_size = os.path.getsize(path)
    if layout == h5py.h5d.CONTIGUOUS:
        stored = d.id.get_storage_size()
        offset = d.id.get_offset()
        wrong_size = stored != nbytes and not variable  # variable-length strings store 16-byte heap references
        if nbytes and (wrong_size or offset is None or offset + stored > file_size):
            raise error(
                f"{where} declares shape {d.shape} ({nbytes:,} bytes) but the file stores {stored:,} bytes "
                f"at offset {offset} of its {file_size:,}",
                hint,
            )
    elif nbytes > 64 * 1024:  # compact data lives in the object header, at most 64 KiB
        raise error(f"{where} declares {nbytes:,} bytes of compact data (at most 65,536 exist)", hint)
    return nbytes


def _product(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n  # a Python int: a lying shape cannot overflow it


METADATA_TIMEOUT = 10.0  # seconds for the metadata pass; a healthy file needs well under one
METADATA_MEMORY = 2 << 30  # bytes the metadata pass may allocate beyond what the process has


def _limit_memory():
    try:
        import resource

        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = current + METADATA_MEMORY
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        if soft == resource.RLIM_INFINITY or limit < soft:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):  # not Linux: the time limit still holds
        pass


def bounded(check, path, error, hint, meanwhile=None):
    """Run ``check()`` in a forked child, at most METADATA_TIMEOUT seconds and METADATA_MEMORY bytes.

    Returns when it finished without error; raises ``error`` with its MinibertError's message,
    or saying the file is damaged when it failed otherwise, crashed, ran out of memory or time.
    ``meanwhile``: a function this process runs while the child checks (``minibert.load``
    imports the Numba kernels there), so the two take the time of the longer one, not the
    sum; the time limit starts when it returns. Without ``os.fork`` (Windows) ``check()``
    runs in this process.
    """
    import h5py  # noqa: F401 - imported once, before the fork, for the child and for this process

    if not hasattr(os, "fork"):
        check()
        if meanwhile is not None:
            meanwhile()
        return
    r, w = os.pipe()
    with warnings.catch_warnings():  # Python >= 3.12 warns on fork() with threads; the child only reads HDF5
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: check, report, exit without running the parent's exit handlers
        try:
            os.close(r)
            os.write(w, json.dumps(_child_report(check, path, hint)).encode("utf-8")[:60000])
        finally:
            os._exit(0)
    os.close(w)
    report = None  # stays None if meanwhile() fails or Ctrl-C comes: then the child is killed
    try:
        if meanwhile is not None:
            meanwhile()
        report = _read_until_closed(r, METADATA_TIMEOUT)
    finally:
        os.close(r)
        if report is None:  # out of time, or interrupted: the child's answer is not wanted
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if report is None:
        raise error(
            f"{path}: the file is damaged (reading its metadata did not finish within {METADATA_TIMEOUT:g} s)", hint
        )
    if not report:  # the child died before reporting
        why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {os.WEXITSTATUS(status)}"
        raise error(f"{path}: the file is damaged (reading its metadata crashed the reader: {why})", hint)
    message = json.loads(report.decode("utf-8"))
    if message is not None:
        raise error(message[0], message[1])


def _child_report(check, path, hint):
    """In the child: run ``check()`` within the memory limit; None, or [message, hint] of what went wrong."""
    _limit_memory()
    try:
        check()
        return None
    except MinibertError as e:
        return [e.message, e.hint]
    except MemoryError:
        return [f"{path}: the file is damaged (reading its metadata needs more than {METADATA_MEMORY >> 20} MiB)", hint]
    except BaseException as e:  # noqa: BLE001 - anything else means damaged structures
        return [f"{path}: the file is damaged ({type(e).__name__}: {str(e)[:300]})", hint]


def _read_until_closed(fd, timeout):
    """The bytes written to pipe ``fd`` until its writer closes it; None if ``timeout`` seconds pass first."""
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
