"""The networks the web page offers, and the only way a request can name one.

Two kinds: the zoo's ImageNet networks whose weights are on this machine now (the
Keras cache, an offline package or PyTorch's hub cache: choosing one never starts a
download), and every ``.keras`` file directly inside the models folder. A request
names a model by the name this listing gives it; the name is looked up, never
joined to a path, so ``../secret.keras`` or ``/etc/passwd`` simply is not in the
listing.

The folder is listed again on every lookup (one ``scandir``), so a model copied into
it appears on the page's next load, and a file replaced on disk gets a new version.

A demo finds its model by the architecture imgrec recorded when it trained the file
(``find_architecture``): that is read from the file's ``imgrec.json`` member alone,
without loading the model, once per file version.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imgrec.core.choices import DEFAULT_MODEL
from imgrec.core.errors import ModelError
from imgrec.models.loading import METADATA_MEMBER
from imgrec.models.registry import ZOO_KIND, get_model_entry, list_models
from imgrec.models.zoo import ZooEntry, keras_cached_weights

# Larger than any training record, small enough to read at once.
_MAX_METADATA_BYTES = 4 << 20


class UnknownModelError(ModelError):
    """The name is not in the catalog."""


@dataclass(frozen=True)
class CatalogEntry:
    """One network the page offers.

    Args:
        name: what the API takes (``"mobilenet_v2"``, ``"pets.keras"``).
        label: what people read (``"MobileNetV2"``, ``"pets.keras"``).
        kind: ``"zoo"``, ``"file"`` or ``"teach"`` (a Teach project's latest model).
        source: what ``imgrec.load_model`` takes: a zoo name or the file's path.
        version: changes when the file changes (its size and modification time);
            empty for zoo networks.
    """

    name: str
    label: str
    kind: str
    source: str
    version: tuple[int, ...] = ()


class ModelCatalog:
    """The zoo networks with local weights, and the ``.keras`` files of one folder.

    Args:
        models_dir: the folder of ``.keras`` files, or ``None`` for zoo networks only.
        extra: called on every lookup for more entries (the Teach projects' models,
            ``imgrec.web.teach``), listed after the files.

    Raises:
        ModelError: ``models_dir`` is given but is not a folder.
    """

    def __init__(
        self,
        models_dir: str | os.PathLike | None = None,
        extra: Callable[[], list[CatalogEntry]] | None = None,
    ) -> None:
        self.extra = extra
        self.models_dir = Path(models_dir).expanduser() if models_dir is not None else None
        if self.models_dir is not None and not self.models_dir.is_dir():
            raise ModelError(f"{self.models_dir}: no such folder (the models folder)")
        # Weights do not appear or vanish while a server runs, and checking them
        # imports nothing: list the zoo networks once.
        zoo = (get_model_entry(name) for name in list_models(ZOO_KIND))
        self._zoo = tuple(
            CatalogEntry(e.name, e.display_name, "zoo", e.name) for e in zoo if _weights_here(e.zoo)
        )
        self._architectures: dict[CatalogEntry, str | None] = {}
        self._architectures_lock = threading.Lock()

    def entries(self) -> list[CatalogEntry]:
        """Every model on offer: zoo networks in the zoo's order, files by name, the extra."""
        return [*self._zoo, *self._files(), *(self.extra() if self.extra else [])]

    def default(self) -> str | None:
        """The name the page selects first: the zoo's default when offered, else the first."""
        names = [entry.name for entry in self.entries()]
        if DEFAULT_MODEL in names:
            return DEFAULT_MODEL
        return names[0] if names else None

    def find(self, name: str) -> CatalogEntry:
        """The entry called exactly ``name``.

        Raises:
            UnknownModelError: no such entry; the message lists the names on offer.
        """
        for entry in self.entries():
            if entry.name == name:
                return entry
        offered = ", ".join(entry.name for entry in self.entries()) or "none"
        raise UnknownModelError(f"unknown model {name!r}; models on offer: {offered}")

    def find_architecture(self, architecture: str) -> CatalogEntry | None:
        """The first file, by name, that imgrec trained as ``architecture``; None if none.

        Args:
            architecture: a chapter network's name (``"mnist-cnn"``), as ``imgrec
                train --arch`` records it in the file's metadata.
        """
        for entry in self._files():
            if self._architecture(entry) == architecture:
                return entry
        return None

    def _architecture(self, entry: CatalogEntry) -> str | None:
        with self._architectures_lock:
            if entry not in self._architectures:
                self._architectures[entry] = _trained_architecture(Path(entry.source))
            return self._architectures[entry]

    def _files(self) -> list[CatalogEntry]:
        if self.models_dir is None:
            return []
        files = []
        with os.scandir(self.models_dir) as listing:
            for item in listing:
                if item.name.startswith(".") or not item.name.endswith(".keras"):
                    continue
                if not item.is_file():
                    continue
                stat = item.stat()
                files.append(
                    CatalogEntry(
                        item.name,
                        item.name,
                        "file",
                        item.path,
                        (stat.st_size, stat.st_mtime_ns),
                    )
                )
        return sorted(files, key=lambda entry: entry.name)


def _weights_here(entry: ZooEntry) -> bool:
    return bool(
        keras_cached_weights(entry)
        or (entry.offline and entry.offline.path())
        or (entry.torch_hub and entry.torch_hub.path())
    )


def _trained_architecture(path: Path) -> str | None:
    """The architecture in a ``.keras`` file's training record; None if it has none.

    Only the small metadata member is read (its declared size checked first); a file
    that is not a zip, or whose metadata is damaged, simply has none here.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(METADATA_MEMBER)
            if info.file_size > _MAX_METADATA_BYTES:
                return None
            with archive.open(info) as member:
                data = json.loads(member.read(_MAX_METADATA_BYTES + 1))
        architecture = data["training"]["architecture"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None
    return architecture if isinstance(architecture, str) else None
