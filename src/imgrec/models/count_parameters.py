"""Build every zoo network once and print its parameters and depth as JSON.

Run as ``python -m imgrec.models.count_parameters``; ``zoo.parameter_counts`` calls it
in a child process so that the caller never imports TensorFlow.
"""

from __future__ import annotations

import gc
import json

from imgrec.models.registry import ZOO_KIND, create_model, list_models


def count(name: str) -> dict[str, int]:
    """Parameters and depth (layers that hold weights) of zoo network ``name``, built once."""
    model = create_model(name)
    return {
        "parameters": int(model.count_params()),
        "depth": sum(1 for layer in model.layers if layer.weights),
    }


def main() -> None:
    counts = {}
    for name in list_models(ZOO_KIND):
        counts[name] = count(name)
        gc.collect()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
