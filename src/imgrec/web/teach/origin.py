"""A project started from a model trained earlier: its classes, and a taught one's samples.

``from_model`` names a model on offer (``/api/models``): a ``.keras`` file gives the
new project its classes (empty, for new samples); another project's taught model
(``teach:ID``) gives its classes and a copy of its samples, so the model can be
retrained with more. The model's metadata is read from the file's ``imgrec.json``
member, without loading the network.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any

from imgrec.core.errors import ModelError
from imgrec.web.catalog import CatalogEntry
from imgrec.web.teach.store import Project, ProjectStore, TeachStoreError

TEACH_PREFIX = "teach:"


def _model_metadata(entry: CatalogEntry) -> dict[str, Any]:
    if entry.kind == "zoo":
        raise TeachStoreError(
            f"{entry.name}: an ImageNet network; start a project from a .keras model "
            "trained on your classes, or from a taught one"
        )
    try:
        with zipfile.ZipFile(entry.source) as archive:
            data = json.loads(archive.read("imgrec.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ModelError(f"{entry.name}: no imgrec metadata to take classes from ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("class_names"), list):
        raise ModelError(f"{entry.name}: its metadata names no classes")
    return data


def project_from_model(store: ProjectStore, body: Any, entry: CatalogEntry) -> Project:
    """A new project named ``body.name`` from the model ``entry`` (see the module).

    Raises:
        TeachStoreError: a zoo network; InvalidNameError: a class name that cannot
        name a folder; QuotaError; ModelError: a file without imgrec metadata.
    """
    from imgrec.training.teach import TEACH_BACKBONES

    data = _model_metadata(entry)
    training = data.get("training") or {}
    backbone = body.backbone
    if backbone is None and training.get("architecture") in TEACH_BACKBONES:
        backbone = training["architecture"]
    size = body.image_size
    if size is None and backbone and training.get("backbone_input"):
        size = int(training["backbone_input"][0])
    classes = [str(name) for name in data["class_names"]]
    project = store.create(body.name, backbone=backbone, image_size=size, classes=classes)
    if entry.kind == "teach" and entry.name.startswith(TEACH_PREFIX):
        source = store.get(entry.name[len(TEACH_PREFIX) :])
        with store.lock(project.id):
            for class_name in source.classes():
                images = [
                    (sample.path.read_bytes(), sample.path.suffix.lower())
                    for sample in source.samples(class_name)
                ]
                if images:
                    project.add_samples(class_name, images)
    return project
