"""Pictures of what a network looks at: class activation maps (CAM, Grad-CAM, Grad-CAM++),
every layer's feature maps, and localisation from a map."""

from imgrec.explanation.cam import (
    COLORMAPS,
    METHODS,
    Explanation,
    class_activation_map,
    colorize,
    explain,
    overlay,
)

__all__ = [
    "COLORMAPS",
    "METHODS",
    "Explanation",
    "class_activation_map",
    "colorize",
    "explain",
    "overlay",
]
