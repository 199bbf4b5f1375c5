"""A real ``imgrec serve`` stays small under concurrent uploads of 49-megapixel photos.

The server runs in its own process on loopback, so its memory can be read from /proc:
its peak during the burst (VmHWM, reset before it through /proc/PID/clear_refs) and its
resident size once the burst is over. bench/serve_load.py runs the full-size check
(twelve such uploads, and a mixed crowd of thirty clients) and reports the numbers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrec.models.chapter import build_chapter_network
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/proc/self/clear_refs").exists(), reason="reads memory from Linux's /proc"
    ),
]

UPLOADS = 4
SIZE = (7000, 7000)  # 49 megapixels: 196 MB as Pillow holds RGB, 147 MB as an array


def _big_png() -> bytes:
    """A 49-megapixel RGB PNG of a few megabytes: flat colour, boxes, a band of noise."""
    width, height = SIZE
    pixels = np.full((height, width, 3), (200, 180, 150), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, width - 1000), rng.integers(0, height - 1000)
        pixels[y : y + 800, x : x + 900] = rng.integers(0, 255, 3)
    pixels[:50] = rng.integers(0, 255, (50, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _memory_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def colour_models(tmp_path_factory) -> Path:
    import imgrec

    folder = tmp_path_factory.mktemp("models")
    model = build_chapter_network("mnist-cnn", input_shape=(32, 32, 3), num_classes=3)
    info = ModelInfo("tiny-rgb", ("a", "b", "c"), Preprocessing(size=(32, 32)), "for tests")
    imgrec.save_model(attach_info(model, info), folder / "rgb.keras")
    return folder


def test_concurrent_49_megapixel_uploads_keep_the_server_small(colour_models):
    import httpx2

    big = _big_png()
    assert len(big) < 10 * 2**20  # under the upload limit
    command = [sys.executable, "-m", "imgrec", "serve", "--port", "0", "--json"]
    process = subprocess.Popen(
        [*command, "--runtime", "keras", "--models", str(colour_models)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        url = json.loads(process.stdout.readline())["url"]
        fields = {"model": "rgb.keras"}
        with httpx2.Client(base_url=url, timeout=300) as http:
            warm_up = http.post("/api/predict", data={**fields, "sample": "coffee"})
            assert warm_up.status_code == 200, warm_up.text
        warm = _memory_mib(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # the peak starts from now

        statuses = []
        start_together = threading.Barrier(UPLOADS)

        def upload() -> None:
            with httpx2.Client(base_url=url, timeout=300) as http:
                start_together.wait()
                answer = http.post("/api/predict", data=fields, files={"file": ("big.png", big)})
            statuses.append(answer.status_code)

        clients = [threading.Thread(target=upload) for _ in range(UPLOADS)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        peak = _memory_mib(process.pid, "VmHWM")
        time.sleep(1)
        after = _memory_mib(process.pid, "VmRSS")
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=60)

    print(f"warm {warm:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB")
    assert statuses == [200] * UPLOADS
    # Decoding one takes ~190 MiB (Pillow's RGB); the full-size copies that used to
    # follow (the RGB conversion, the array, the array waiting for the model) are gone.
    assert peak - warm < UPLOADS * 250, (warm, peak)
    assert after < 1.5 * warm, (warm, after)
