"""Build zoo networks once and print their parameters and depth as JSON.

Run as ``python -m imgrec.models.count_parameters [NAME ...]`` (default: every zoo
network); ``zoo.parameter_counts`` calls it in a child process so that the caller
never imports TensorFlow.
"""

from __future__ import annotations

import gc
import json
import sys

from imgrec.models.registry import ZOO_KIND, create_model, list_models


def count(name: str) -> dict[str, int]:
    """Parameters and depth (layers that hold weights) of zoo network ``name``, built once."""
    model = create_model(name)
    return {
        "parameters": int(model.count_params()),
        "depth": sum(1 for layer in model.layers if layer.weights),
    }


def main(names: list[str] | None = None) -> None:
    """Print ``{name: count(name)}`` as JSON for ``names`` (default: every zoo network)."""
    counts = {}
    for name in names or list_models(ZOO_KIND):
        counts[name] = count(name)
        gc.collect()
    print(json.dumps(counts))


if __name__ == "__main__":
    main(sys.argv[1:])
