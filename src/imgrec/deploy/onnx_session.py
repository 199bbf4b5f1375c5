"""Opening an ONNX Runtime session, without Keras.

``imgrec.deploy.runtime.OnnxRuntime`` and the batch workers of ``imgrec predict
--engine ray`` (``imgrec.deploy.batch_worker``, which must start without TensorFlow)
open their sessions here, the same way.
"""

from __future__ import annotations

import os
from typing import Any

from imgrec.core.errors import ModelError


def open_session(
    model: str | os.PathLike | bytes, *, threads: int | None = None, name: str | None = None
) -> Any:
    """An ``onnxruntime.InferenceSession`` for an ONNX file or its bytes.

    Args:
        model: the ``.onnx`` file, or its content.
        threads: threads for one operation (ONNX Runtime's ``intra_op_num_threads``);
            ``None``: ONNX Runtime's default, one per core. A process among several
            on the same cores (a batch worker) takes its share.
        name: how error messages name the model (default: the path, or ``<bytes>``).

    Raises:
        ModelError: ONNX Runtime cannot load it.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its optimiser's notes are noise here
    if threads is not None:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else os.fspath(model)
    label = name or ("<bytes>" if isinstance(model, bytes) else source)
    try:
        return onnxruntime.InferenceSession(
            source, options, providers=onnxruntime.get_available_providers()
        )
    except Exception as err:  # ONNX Runtime raises its own types for bad files
        raise ModelError(f"{label}: ONNX Runtime cannot load this file ({err})") from err
