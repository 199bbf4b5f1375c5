"""Tests of imgrec.core.images: real files written by Pillow, read back through load_image."""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrec.core.errors import ImageError
from imgrec.core.images import DEFAULT_MAX_PIXELS, is_image_file, load_image

WHITE = (255, 255, 255)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def save(tmp_path: Path, filename: str, image: Image.Image, fmt: str, **params) -> Path:
    path = tmp_path / filename
    image.save(path, fmt, **params)
    return path


def raises_naming(path: Path | str, what: str):
    """pytest.raises for an ImageError whose message starts with ``path`` and says ``what``."""
    return pytest.raises(ImageError, match=rf"^{re.escape(str(path))}: .*{what}")


def png_claiming(width: int, height: int) -> bytes:
    """A 1 x 1 PNG whose header is patched to claim ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    # Signature (8 bytes), IHDR length (4), "IHDR" (4), then width and height; the CRC
    # after the 13 data bytes covers the chunk type and data.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- pixel modes -----------------------------------------------------------------------


def test_rgb_png_pixels_exact(tmp_path):
    pixels = np.array([[RED, GREEN], [BLUE, WHITE], [(10, 20, 30), (0, 0, 0)]], np.uint8)
    path = save(tmp_path, "rgb.png", Image.fromarray(pixels), "PNG")
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out, pixels)


def test_rgb_accepts_str_path(tmp_path):
    path = save(tmp_path, "rgb.png", Image.new("RGB", (4, 2), RED), "PNG")
    assert load_image(str(path)).shape == (2, 4, 3)


def test_l_input_becomes_grey_rgb(tmp_path):
    grey = np.array([[0, 100, 255]], np.uint8)
    path = save(tmp_path, "grey.png", Image.fromarray(grey), "PNG")
    out = load_image(path)
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


def test_mode_l_output_is_luminance(tmp_path):
    path = save(tmp_path, "red.png", Image.new("RGB", (3, 2), RED), "PNG")
    out = load_image(path, mode="L")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 1)
    assert np.all(out == 76)  # ITU-R 601-2 luma: 0.299 * 255


def test_la_transparent_pixel_becomes_white(tmp_path):
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (50, 255))
    image.putpixel((1, 0), (0, 0))
    out = load_image(save(tmp_path, "la.png", image, "PNG"))
    np.testing.assert_array_equal(out[0], [(50, 50, 50), WHITE])


def test_rgba_composited_over_white(tmp_path):
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (*RED, 255))
    image.putpixel((1, 0), (*BLUE, 0))
    image.putpixel((2, 0), (0, 0, 0, 128))
    out = load_image(save(tmp_path, "rgba.png", image, "PNG"))
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0, 0], RED)
    np.testing.assert_array_equal(out[0, 1], WHITE)
    np.testing.assert_allclose(out[0, 2], (127, 127, 127), atol=1)


def palette_image() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE])
    image.putpixel((1, 0), 1)
    return image


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP"])
def test_palette_without_transparency(tmp_path, fmt):
    out = load_image(save(tmp_path, f"p.{fmt.lower()}", palette_image(), fmt))
    np.testing.assert_array_equal(out[0], [RED, BLUE])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparent_index_becomes_white(tmp_path, fmt):
    path = save(tmp_path, f"p.{fmt.lower()}", palette_image(), fmt, transparency=0)
    out = load_image(path)
    np.testing.assert_array_equal(out[0], [WHITE, BLUE])


def test_cmyk_jpeg_roughly_right_colour(tmp_path):
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in ink
    out = load_image(save(tmp_path, "cmyk.jpg", image, "JPEG", quality=95))
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out[4, 4], RED, atol=8)


def test_cmyk_tiff_exact(tmp_path):
    image = Image.new("CMYK", (2, 2), (255, 0, 255, 0))  # green in ink
    out = load_image(save(tmp_path, "cmyk.tif", image, "TIFF"))
    assert np.all(out == GREEN)


@pytest.mark.parametrize(
    ("pillow_mode", "fmt"),
    [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF")],
)
def test_16_bit_grey_scaled_not_clipped(tmp_path, pillow_mode, fmt):
    image = Image.new(pillow_mode, (4, 1))
    for x, value in enumerate([0, 257, 32768, 65535]):
        image.putpixel((x, 0), value)
    path = save(tmp_path, f"grey16.{fmt.lower()}", image, fmt)
    with Image.open(path) as reread:
        assert reread.mode == pillow_mode  # the test really covers this mode
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(load_image(path, mode="L")[0, :, 0], [0, 1, 128, 255])


def test_16_bit_pgm_scaled(tmp_path):
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5 3 1 65535\n" + np.array([0, 32768, 65535], ">u2").tobytes())
    np.testing.assert_array_equal(load_image(path)[0, :, 0], [0, 128, 255])


def test_16_bit_rgb_png(tmp_path):
    # Pillow cannot write 16-bit RGB, so the PNG is assembled by hand.
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"\x00" + np.array([65535, 0, 32768, 0, 65535, 0], ">u2").tobytes()
    header = struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0)  # 2 x 1, 16 bits, RGB
    path = tmp_path / "rgb16.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    np.testing.assert_array_equal(load_image(path)[0], [(255, 0, 128), GREEN])


def test_float_tiff_clipped_to_0_255(tmp_path):
    image = Image.new("F", (3, 1))
    for x, value in enumerate([0.0, 100.0, 300.0]):
        image.putpixel((x, 0), value)
    out = load_image(save(tmp_path, "float.tif", image, "TIFF"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255])


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_bilevel(tmp_path, fmt):
    image = Image.new("1", (2, 1))
    image.putpixel((1, 0), 1)
    out = load_image(save(tmp_path, f"bw.{fmt.lower()}", image, fmt))
    np.testing.assert_array_equal(out[0], [(0, 0, 0), WHITE])


def test_ycbcr_tiff(tmp_path):
    image = Image.new("RGB", (2, 2), RED).convert("YCbCr")
    path = save(tmp_path, "ycbcr.tif", image, "TIFF")
    with Image.open(path) as reread:
        assert reread.mode == "YCbCr"
    np.testing.assert_allclose(load_image(path)[0, 0], RED, atol=3)


@pytest.mark.parametrize("fmt", ["WEBP", "PPM"])
def test_other_allowed_formats(tmp_path, fmt):
    path = save(tmp_path, "image.bin", Image.new("RGB", (5, 3), BLUE), fmt, lossless=True)
    out = load_image(path)
    assert out.shape == (3, 5, 3) and np.all(out == BLUE)


# --- orientation, frames, content sniffing, bytes ----------------------------------------


def test_exif_orientation_6_rotates_upright(tmp_path):
    # 40 wide x 20 high, a red square in the stored top-left corner. Orientation 6 means
    # "rotate 90 degrees clockwise to display": the corner ends up top-right.
    pixels = np.full((20, 40, 3), 255, np.uint8)
    pixels[:10, :10] = RED
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    path = save(tmp_path, "photo.jpg", Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)
    np.testing.assert_allclose(out[4, 15], RED, atol=30)  # top-right
    np.testing.assert_allclose(out[4, 4], WHITE, atol=30)  # top-left
    np.testing.assert_allclose(out[35, 15], WHITE, atol=30)  # bottom-right


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, GREEN, BLUE)]
    path = save(tmp_path, "anim.gif", frames[0], "GIF", save_all=True, append_images=frames[1:])
    with Image.open(path) as reread:
        assert reread.n_frames == 3
    out = load_image(path)
    assert out.shape == (4, 6, 3) and np.all(out == RED)


def test_format_sniffed_from_content_not_extension(tmp_path):
    path = save(tmp_path, "really_a_png.jpg", Image.new("RGB", (3, 3), GREEN), "PNG")
    assert np.all(load_image(path) == GREEN)


def test_bytes_input(tmp_path):
    path = save(tmp_path, "upload.png", Image.new("RGB", (3, 2), BLUE), "PNG")
    data = path.read_bytes()
    assert np.all(load_image(data) == BLUE)
    assert load_image(bytearray(data), mode="L").shape == (2, 3, 1)


def test_bytes_errors_use_given_name():
    with pytest.raises(ImageError, match=r"^cat\.jpg: not an image"):
        load_image(b"hello, world", name="cat.jpg")
    with pytest.raises(ImageError, match=r"^<bytes>: the file is empty"):
        load_image(b"")


def test_real_photo_chelsea():
    skimage_data = pytest.importorskip("skimage.data")
    path = os.path.join(os.path.dirname(skimage_data.__file__), "chelsea.png")
    out = load_image(path)
    assert out.shape == (300, 451, 3) and out.dtype == np.uint8
    assert 50 < out.mean() < 200


# --- size cap ----------------------------------------------------------------------------


def test_pixel_cap(tmp_path):
    path = save(tmp_path, "big.png", Image.new("RGB", (100, 100)), "PNG")
    with raises_naming(path, r"too large \(100 x 100 = 10,000 pixels, the limit is 5,000\)"):
        load_image(path, max_pixels=5000)
    assert load_image(path, max_pixels=10_000).shape == (100, 100, 3)


def test_default_cap_checked_before_decoding(tmp_path):
    # 8000 x 8000 is over imgrec's cap but under Pillow's own limits: imgrec's check
    # fires; decoding would have failed differently (there is only one pixel of data).
    assert DEFAULT_MAX_PIXELS < 8000 * 8000
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(8000, 8000))
    with raises_naming(path, "too large .*8000 x 8000"):
        load_image(path)


def test_pillow_bomb_error_converted(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(100_000, 100_000))
    with raises_naming(path, "too large") as caught:
        load_image(path, max_pixels=10**12)
    assert isinstance(caught.value.__cause__, Image.DecompressionBombError)


# --- bad inputs --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with raises_naming(path, "no such file") as caught:
        load_image(path)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_directory(tmp_path):
    with raises_naming(tmp_path, "cannot read it"):
        load_image(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    with raises_naming(path, "empty"):
        load_image(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image at all\n" * 10)
    with raises_naming(path, "not an image") as caught:
        load_image(path)
    assert caught.value.__cause__ is not None


def test_format_outside_allow_list(tmp_path):
    path = save(tmp_path, "image.tga", Image.new("RGB", (4, 4), RED), "TGA")
    with raises_naming(path, "not in a supported format"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = save(tmp_path, f"cut.{fmt.lower()}", Image.fromarray(noise), fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with raises_naming(path, "truncated or corrupt") as caught:
        load_image(path)
    assert isinstance(caught.value.__cause__, OSError | SyntaxError | ValueError | EOFError)


def test_bad_arguments(tmp_path):
    path = save(tmp_path, "ok.png", Image.new("RGB", (2, 2)), "PNG")
    with pytest.raises(ValueError, match="mode"):
        load_image(path, mode="RGBA")
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(path, max_pixels=0)


# --- is_image_file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cat.jpg", True),
        ("CAT.JPEG", True),
        ("dir/dog.Png", True),
        ("anim.gif", True),
        ("scan.tif", True),
        ("scan.TIFF", True),
        ("a.bmp", True),
        ("a.webp", True),
        ("a.ppm", True),
        ("a.pgm", True),
        ("a.pbm", True),
        ("._cat.jpg", False),
        (".hidden.png", False),
        ("notes.txt", False),
        ("archive.jpg.zip", False),
        ("jpg", False),
        ("model.keras", False),
    ],
)
def test_is_image_file(name, expected):
    assert is_image_file(name) is expected
    assert is_image_file(Path(name)) is expected
