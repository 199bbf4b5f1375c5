"""The lazy public API: every name is the function, whatever was imported before."""

from __future__ import annotations

import importlib
import types

import pytest

import imgrec


@pytest.mark.parametrize("name", sorted(imgrec._API))
def test_each_api_name_is_a_function_even_after_its_module_is_imported(name):
    # Importing a submodule sets an attribute of the package: a module named like
    # an API function would shadow the function.
    importlib.import_module(imgrec._API[name])
    value = getattr(imgrec, name)
    assert callable(value) and not isinstance(value, types.ModuleType)
    assert value.__name__ == name
