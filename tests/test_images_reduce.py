"""Shrinking while decoding (``load_image(min_side=)``) and its memory estimate (``decode_cost``).

A server that only needs a network's input size should never hold a 49-megapixel photo
at full size: JPEGs are decoded at a reduced scale, other formats reduced by a whole
factor right after decoding. The estimate must be known from the header alone, and
must cover what decoding really takes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrec.core.errors import ImageError
from imgrec.core.images import decode_cost, load_image

RED = (255, 0, 0)


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[np.newaxis, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, np.newaxis]
    return np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)


def test_a_png_is_reduced_by_a_whole_factor_to_box_averages():
    pixels = _gradient(2000, 1000)
    out = load_image(_encode(Image.fromarray(pixels), "PNG"), min_side=100)
    # The short side 1000 keeps at least 2 x 100: factor 5.
    assert out.shape == (200, 400, 3)
    boxes = pixels.reshape(200, 5, 400, 5, 3).mean(axis=(1, 3))
    assert np.abs(out - boxes).max() <= 1


def test_a_jpeg_is_decoded_at_a_reduced_scale():
    data = _encode(Image.fromarray(_gradient(1600, 1200)), "JPEG", quality=95)
    out = load_image(data, min_side=100)
    # 1200 // 200 = 6: the JPEG decoder's largest scale below is 1/4.
    assert out.shape == (300, 400, 3)
    full = np.asarray(Image.fromarray(load_image(data)).resize((400, 300), Image.Resampling.BOX))
    assert np.abs(out.astype(int) - full).mean() < 2


def test_small_images_are_not_touched():
    pixels = _gradient(300, 200)
    data = _encode(Image.fromarray(pixels), "PNG")
    np.testing.assert_array_equal(load_image(data, min_side=100), load_image(data))
    np.testing.assert_array_equal(load_image(data, min_side=100), pixels)


def test_the_orientation_survives_the_reduction():
    # 800 wide x 400 high, red in the stored top-left; orientation 6 turns it to the top-right.
    pixels = np.full((400, 800, 3), 255, np.uint8)
    pixels[:200, :200] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ["JPEG", "PNG"]:
        data = _encode(Image.fromarray(pixels), fmt, exif=exif)
        out = load_image(data, min_side=50)
        assert out.shape == (200, 100, 3), fmt  # factor 4 (or 1/4 scale), upright
        np.testing.assert_allclose(out[10, 90], RED, atol=30)
        np.testing.assert_allclose(out[10, 10], (255, 255, 255), atol=30)
        np.testing.assert_allclose(out[190, 90], (255, 255, 255), atol=30)


def test_transparency_is_still_white_after_the_reduction():
    image = Image.new("RGBA", (800, 800), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 400, 800))
    out = load_image(_encode(image, "PNG"), min_side=100)
    assert out.shape == (200, 200, 3)
    assert np.all(out[:, :95] == (0, 0, 255))
    assert np.all(out[:, 105:] == 255)  # transparent black composited over white, not grey
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    clear = palette.getpixel((799, 0))
    out = load_image(_encode(palette, "PNG", transparency=clear), min_side=100)
    assert np.all(out[:, 105:] == 255)
    assert np.all(out[:, :95] == (0, 0, 255))


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("I;16", 65535, 255), ("I;16", 32768, 128), ("1", 1, 255), ("L", 77, 77), ("F", 300.0, 255)],
)
def test_other_modes_reduce_to_the_same_colours(mode, value, expected):
    image = Image.new(mode, (800, 400), value)
    fmt = "TIFF" if mode == "F" else "PNG"
    out = load_image(_encode(image, fmt), min_side=50)
    assert out.shape == (100, 200, 3)
    assert np.all(out == expected)


def test_grey_output_after_the_reduction():
    out = load_image(_encode(Image.new("RGB", (800, 800), RED), "PNG"), mode="L", min_side=50)
    assert out.shape == (100, 100, 1) and np.all(out == 76)  # factor 800 // 100


def test_the_estimate_needs_only_the_header():
    data = _encode(Image.new("RGB", (2000, 1000), RED), "PNG")
    reduced = decode_cost(data, min_side=100)
    full = decode_cost(data)
    # Pillow keeps RGB in 4 bytes a pixel; the reduced result is small beside it.
    assert 2000 * 1000 * 4 <= reduced < 2000 * 1000 * 5
    assert full > 2 * reduced  # full size: converted copies and the array on top
    jpeg = _encode(Image.new("RGB", (1600, 1200), RED), "JPEG")
    assert decode_cost(jpeg, min_side=100) < 1600 * 1200  # decoded at 1/4 scale
    truncated = data[:100]  # the header is all there is: the estimate does not decode
    assert decode_cost(truncated, min_side=100) == reduced
    with pytest.raises(ImageError, match="cannot decode it"):
        load_image(truncated, min_side=100)


def test_the_estimate_refuses_what_load_image_refuses():
    with pytest.raises(ImageError, match=r"^photo: not an image"):
        decode_cost(b"#!/bin/sh\n", name="photo")
    with pytest.raises(ImageError, match=r"^<bytes>: the file is empty"):
        decode_cost(b"")
    big = _encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(ImageError, match=r"too large \(100 x 100 = 10,000 pixels"):
        decode_cost(big, max_pixels=5000)
    with pytest.raises(ImageError, match="no such file"):
        decode_cost("/nonexistent/photo.png")
    with pytest.raises(ValueError, match="min_side"):
        decode_cost(big, min_side=0)
    with pytest.raises(ValueError, match="min_side"):
        load_image(big, min_side=0)


# Run in a fresh interpreter: a process's peak memory (VmHWM) counts every thread, and the
# test process has others (servers and pools other tests left) that allocate meanwhile.
PEAK_SCRIPT = """
import io, json
from pathlib import Path
import numpy as np
from PIL import Image
from imgrec.core.images import decode_cost, load_image

def status_mib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

pixels = np.zeros((4000, 4000, 3), np.uint8)
pixels[::7] = 255
buffer = io.BytesIO()
Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
data = buffer.getvalue()
del pixels, buffer
results = {}
for min_side in [None, 224]:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from now
    before = status_mib("VmRSS")
    load_image(data, min_side=min_side)
    peak = status_mib("VmHWM") - before
    results[str(min_side)] = [peak, decode_cost(data, min_side=min_side) / 2**20]
print(json.dumps(results))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_the_estimate_covers_the_real_peak_and_the_reduction_saves_it():
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    peaks = {}
    for min_side, (peak, estimate) in results.items():
        peaks[min_side] = peak
        assert peak <= estimate + 8, (min_side, peak, estimate)
    # 16 megapixels: full size, 4 + 4 + 3 bytes a pixel at the peak; reduced, the 4 decoded.
    assert peaks["224"] < 0.6 * peaks["None"]
