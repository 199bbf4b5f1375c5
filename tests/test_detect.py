"""`imgrec detect`: OpenCV's Haar cascades on scikit-image's photos.

Where things are in the photos, measured by eye on the files (x, y in pixels):
- ``astronaut`` (512 x 512): the face from eyebrows to chin fills (180, 70)-(270, 160);
  the eyes are at (205, 100) and (247, 100);
- ``chelsea`` (451 x 300): the cat's face fills the photo (ears cut off); its pink
  nose is at (265, 242), its eyes at (175, 115) and (320, 140);
- ``coffee``: a cup of coffee, no face.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgrec.classic.detection import DETECTORS, detect
from imgrec.cli import main
from imgrec.core.errors import ModelError
from imgrec.core.images import load_image
from imgrec.core.samples import sample_path

ASTRONAUT_FACE = (180, 70, 270, 160)  # left, top, right, bottom
ASTRONAUT_EYES = ((205, 100), (247, 100))
CHELSEA_NOSE = (265, 242)


def _corners(box: dict) -> tuple[int, int, int, int]:
    return box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]


def _iou(a: tuple, b: tuple) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return overlap / (area - overlap)


def _contains(box: dict, point: tuple[int, int]) -> bool:
    left, top, right, bottom = _corners(box)
    return left <= point[0] < right and top <= point[1] < bottom


@pytest.fixture(scope="module")
def astronaut():
    return sample_path("astronaut")


def test_finds_the_astronauts_face(astronaut):
    result = detect(astronaut, "face")
    assert (result["width"], result["height"]) == (512, 512)
    assert len(result["boxes"]) == 1
    assert _iou(_corners(result["boxes"][0]), ASTRONAUT_FACE) >= 0.6


def test_finds_both_eyes_of_the_astronaut(astronaut):
    boxes = detect(astronaut, "eyes")["boxes"]
    for eye in ASTRONAUT_EYES:
        assert any(_contains(box, eye) for box in boxes), eye


def test_cat_face_finds_chelseas_face():
    """The face fills the photo; the cascade finds its lower half, around the nose."""
    boxes = detect(sample_path("chelsea"), "cat-face")["boxes"]
    assert boxes
    assert _contains(boxes[0], CHELSEA_NOSE)


def test_no_face_in_the_coffee_photo():
    assert detect(sample_path("coffee"), "face")["boxes"] == []


def test_boxes_are_drawn_on_a_png(astronaut, tmp_path):
    out = tmp_path / "boxes.png"
    result = detect(astronaut, "face", out=out)
    assert result["out"] == str(out)
    drawn, photo = load_image(out), load_image(astronaut)
    assert drawn.shape == photo.shape
    left, top, right, _ = _corners(result["boxes"][0])
    middle = (left + right) // 2
    assert drawn[top, middle].tolist() == [255, 40, 40]
    changed = np.any(drawn != photo, axis=-1)
    assert changed[top, middle] and not changed[top + 20, middle]


def test_an_array_gives_the_same_boxes_as_the_file(astronaut):
    from_file = detect(astronaut, "face")["boxes"]
    assert detect(load_image(astronaut), "face")["boxes"] == from_file


def test_unknown_detector_is_refused(astronaut):
    with pytest.raises(ModelError, match="unknown detector 'dog'"):
        detect(astronaut, "dog")
    assert set(DETECTORS) == {"face", "eyes", "cat-face"}


def test_cli_lists_boxes_as_json(astronaut, tmp_path, capsys):
    out = tmp_path / "eyes.png"
    assert main(["detect", str(astronaut), "--detector", "eyes", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["detector"] == "eyes" and len(result["boxes"]) >= 2
    assert out.is_file()


def test_cli_names_a_broken_image_in_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    assert main(["detect", str(broken)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("imgrec: error:") and "broken.jpg" in error
    assert len(error.splitlines()) == 1
