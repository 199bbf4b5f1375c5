"""Old module paths that still import, for one release, with a DeprecationWarning.

The modules were regrouped by stage (see docs/development.md, "Layers"). ``import imgrec.runtime``
and ``from imgrec.errors import ImgrecError`` keep working: this finder answers the old
name with the module that lives under the new one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {
    "imgrec.errors": "imgrec.core.errors",
    "imgrec.storage": "imgrec.core.storage",
    "imgrec.images": "imgrec.core.images",
    "imgrec.samples": "imgrec.core.samples",
    "imgrec.safe_pickle": "imgrec.core.safe_pickle",
    "imgrec.plots": "imgrec.core.plots",
    "imgrec.augment": "imgrec.training.augment",
    "imgrec.transfer": "imgrec.training.transfer",
    "imgrec.runtime": "imgrec.deploy.export_cache",
    "imgrec.exporter": "imgrec.deploy.exporter",
    "imgrec.gradients": "imgrec.explanation.gradients",
    "imgrec.layer_view": "imgrec.explanation.layer_view",
    "imgrec.localize": "imgrec.explanation.localization",
    "imgrec.detection": "imgrec.classic.detection",
    "imgrec.summaries": "imgrec.models.summaries",
    "imgrec.models.seed": "imgrec.models.chapter",
    "imgrec.classic.compare": "imgrec.evaluation.comparison",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module now at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; the old name will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its new name already."""


def install() -> None:
    """Answer the old module paths (once per interpreter)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
