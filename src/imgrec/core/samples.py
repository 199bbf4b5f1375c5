"""Sample photos that install with imgrec's dependencies, for demos and the web page.

scikit-image ships them inside its wheel, so they are there offline.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from imgrec.core.errors import ImageError

# name -> file inside skimage/data
SAMPLES = {
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "astronaut": "astronaut.png",
    "rocket": "rocket.jpg",
}


def sample_path(name: str) -> Path:
    """The file of the sample photo ``name`` (one of ``SAMPLES``).

    Raises:
        ImageError: unknown name, or scikit-image's data files are missing.
    """
    if name not in SAMPLES:
        raise ImageError(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")
    path = Path(str(resources.files("skimage").joinpath("data", SAMPLES[name])))
    if not path.is_file():
        raise ImageError(f"{path}: sample photo missing; reinstall scikit-image")
    return path
