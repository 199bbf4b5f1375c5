"""Keep the web page's models loaded and warm, safely across the server's threads.

Loading MobileNetV2 takes seconds and its first forward pass compiles; a page that
did either per request would be unusable. ``ModelCache`` loads each model once,
opens the runtime that classifies with it (``imgrec.deploy.runtime``: ONNX Runtime on the
model's cached ONNX export, or Keras), runs one forward pass on a blank image (so the
times the page shows are steady-state times), and keeps the most recently used few.
The Keras model stays loaded beside the runtime: class activation maps and feature
maps need it.

One lock serialises every forward pass and every Keras/TensorFlow call the server
makes (loading, ONNX export, warm-up, prediction, CAM, feature maps): Keras's lazily
built predict function and TensorFlow's graph state are not meant to be built from
two threads at once, and on a CPU one forward pass already uses every core, so
running two at once would not be faster. Decoding images and fetching URLs happen
outside it, in parallel.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import keras

from imgrec.core.choices import RUNTIMES
from imgrec.deploy.export_cache import load_runtime
from imgrec.deploy.runtime import OnnxRuntime, Runtime
from imgrec.models.loading import load_model
from imgrec.models.metadata import ModelInfo, model_info
from imgrec.web.catalog import CatalogEntry


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to answer.

    Args:
        entry: the catalog entry it was loaded from.
        model: the plain ``keras.Model`` (class activation maps, layers, feature maps).
        info: its imgrec metadata (class names, preprocessing).
        mode: how to decode photos for it: ``"RGB"``, or ``"L"`` for grey networks.
        runtime: what classifies photos with it: ONNX Runtime or the Keras model.
    """

    entry: CatalogEntry
    model: keras.Model
    info: ModelInfo
    mode: str
    runtime: Runtime


class ModelCache:
    """The last ``capacity`` models used, each loaded once even under concurrent requests.

    Args:
        capacity: how many models stay loaded; the least recently used goes first.
        lock: the lock that serialises Keras/TensorFlow calls (see the module docstring).
        loader: builds a model from a catalog entry's ``source``; ``imgrec.load_model``.
        runtime: what classifies: ``"auto"`` (ONNX Runtime on the model's cached
            export when it can be had, else Keras), ``"onnx"`` or ``"keras"``; see
            ``imgrec.deploy.export_cache.load_runtime``.

    Raises:
        ValueError: ``capacity`` below 1, or an unknown ``runtime``.
    """

    def __init__(
        self,
        capacity: int = 4,
        lock: threading.Lock | None = None,
        loader: Callable[[str], keras.Model] = load_model,
        runtime: str = "auto",
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        self.capacity = capacity
        self.runtime = runtime
        self.lock = lock if lock is not None else threading.Lock()
        self._loader = loader
        self._models: OrderedDict[CatalogEntry, LoadedModel] = OrderedDict()
        self._guard = threading.Lock()  # protects the two dicts, never held while loading
        self._loading: dict[CatalogEntry, threading.Lock] = {}

    def get(self, entry: CatalogEntry) -> LoadedModel:
        """The loaded, warmed-up model of ``entry``; loads it on first use.

        Concurrent first requests for one model wait for a single load; requests for
        models already loaded never wait for a load.

        Raises:
            ModelError, WeightsError: the model cannot be loaded (nothing is cached,
                so the next request tries again).
        """
        with self._guard:
            if entry in self._models:
                self._models.move_to_end(entry)
                return self._models[entry]
            load_lock = self._loading.setdefault(entry, threading.Lock())
        with load_lock:
            with self._guard:
                if entry in self._models:  # another thread loaded it while we waited
                    return self._models[entry]
            loaded = self._load(entry)
            with self._guard:
                self._models[entry] = loaded
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
                self._loading.pop(entry, None)
            return loaded

    def loaded_names(self) -> set[str]:
        """The names of the models loaded now."""
        with self._guard:
            return {entry.name for entry in self._models}

    def onnx_export(self, entry: CatalogEntry) -> OnnxRuntime:
        """The current ONNX export of ``entry``'s model, exported on first use.

        The runtime that already classifies with it when that is ONNX Runtime;
        otherwise (``runtime="keras"``, or ``"auto"`` that fell back to Keras) the
        export cache of ``imgrec.deploy.runtime`` is asked, strictly.

        Raises:
            ModelError, WeightsError: the model cannot be loaded, or cannot be exported.
            ImgrecError: ONNX Runtime or the exporter is not installed.
        """
        loaded = self.get(entry)
        if isinstance(loaded.runtime, OnnxRuntime):
            return loaded.runtime
        with self.lock:
            exported = load_runtime(loaded.model, "onnx")
        assert isinstance(exported, OnnxRuntime)  # "onnx" gives ONNX Runtime or raises
        return exported

    def _load(self, entry: CatalogEntry) -> LoadedModel:
        with self.lock:
            model = self._loader(entry.source)
            info = model_info(model)
            mode = "L" if model.input_shape[-1] == 1 else "RGB"
            # The model in memory, not its name or file: nothing is loaded twice, and
            # the export cache knows it by its weights.
            engine = load_runtime(model, self.runtime)
            # The first forward pass compiles or allocates; do it now rather than in a
            # user's request.
            engine.warm_up()
        return LoadedModel(entry, model, info, mode, engine)
