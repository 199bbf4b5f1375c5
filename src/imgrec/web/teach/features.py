"""Features of newly added samples, computed in the server right after the upload.

One background thread takes the samples in the order they came, loads the project's
backbone once (kept for the next samples: ``MAX_BACKBONES`` at most) and writes each
sample's features into the project's feature store. The upload is answered as soon
as the sample is stored; when "Train" comes, the features are usually there already,
and the training child computes any that are not (the two write the same file
atomically, so either may win).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

MAX_BACKBONES = 2
_log = logging.getLogger("imgrec.web.teach")


class FeaturePrefetcher:
    """Computes features of samples in a background thread.

    Args:
        lock: held around each batch's Keras calls (the server's model-cache lock).
        enabled: False makes ``submit`` do nothing (training computes them then).
    """

    def __init__(self, lock: AbstractContextManager | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = lock if lock is not None else nullcontext()
        self._queue: queue.Queue[tuple[str, int, Path, list[Any]] | None] = queue.Queue()
        self._backbones: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.pending = 0

    def submit(self, backbone: str, size: int, features_root: Path, samples: list[Any]) -> None:
        """Queue ``samples`` (``imgrec.training.teach.Sample``) for ``backbone`` at ``size``."""
        if not self.enabled or not samples:
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="teach-features", daemon=True
                )
                self._thread.start()
            self.pending += len(samples)
        self._queue.put((backbone, size, features_root, samples))

    def join(self) -> None:
        """Wait until everything queued so far is done (for tests and benchmarks)."""
        self._queue.join()

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)

    def _work(self) -> None:
        from imgrec.training.teach import PLAIN_VIEWS, FeatureStore, ensure_features, features_dir

        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                backbone_name, size, root, samples = job
                backbone = self._backbone(backbone_name, size)
                store = FeatureStore(features_dir(root, backbone_name, size))
                with self._lock:
                    ensure_features(backbone, store, samples, PLAIN_VIEWS)
            except Exception:  # a sample gone, weights missing: training retries
                _log.warning("teach: computing features failed", exc_info=True)
            finally:
                if job is not None:
                    with self._start_lock:
                        self.pending -= len(job[3])
                self._queue.task_done()

    def _backbone(self, name: str, size: int) -> Any:
        from imgrec.training.teach import FeatureBackbone

        key = (name, size)
        if key not in self._backbones:
            with self._lock:
                self._backbones[key] = FeatureBackbone(name, size)
            while len(self._backbones) > MAX_BACKBONES:
                self._backbones.popitem(last=False)
        self._backbones.move_to_end(key)
        return self._backbones[key]
