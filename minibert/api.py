"""``load()``: a converted ``.h5`` file -> a ready-to-call model, with its task head if asked.

This is the entry point the README, the tutorials and the command line use; it ties the file
format (``weights``), the encoder (``model``) and the task heads (``heads``) together.
"""

from pathlib import Path
from typing import Optional, Union

from . import weights as weights_format
from .heads import HEAD_CLASSES, BertHeadModel, check_head_available
from .inputs import DEFAULT_BACKEND, check_backend, check_dtype
from .model import BertModel, backend_functions

__all__ = ["load"]


def load(path: Union[str, Path], dtype: str = "float32", backend: str = DEFAULT_BACKEND, verify: bool = True,
         head: Optional[str] = None) -> Union[BertModel, BertHeadModel]:
    """Load a converted minibert .h5 file as a ready-to-call ``BertModel``.

    ``dtype``: "float32" (as PyTorch) or "float64" (every step in float64).
    ``backend``: "numba" (the fast kernels, the default) or "numpy" (the readable reference).
    ``verify``: check every tensor's SHA-256 against the one stored at conversion.
    ``head``: None for the bare encoder, or "masked-lm", "next-sentence", "classification"
    for the encoder with that task head (``minibert.heads``); its outputs carry ``logits``;
    or "pretraining" for a file holding both the masked-LM and next-sentence heads.
    """
    check_dtype(dtype)  # a wrong setting is an error before the file is read
    check_backend(backend)
    # The file's metadata is checked in a child process (hdf5.bounded); meanwhile this process
    # imports the backend (Numba: about 0.15 s), so the two overlap.
    w = weights_format.load(path, verify=verify, meanwhile=lambda: backend_functions(backend))
    if head is not None:
        check_head_available(head, w.heads, path)  # before building anything: a clear HeadError
    bert = BertModel(w.config, w.tensors, dtype=dtype, backend=backend, path=str(path), heads=w.heads)
    return bert if head is None else HEAD_CLASSES[head](bert)
