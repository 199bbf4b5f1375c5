"""The Teach API end to end, against a real ``imgrec serve`` on loopback.

The photos are scikit-image's two: random crops (some mirrored) of ``chelsea`` (a
cat) and ``coffee`` as the samples, and the whole photos, never uploaded, as the
photos the model is asked about. The backbone runs at its smallest input (96 px).

One server for the module; the kill tests kill it with SIGKILL and start another on
the same projects folder, as a crashed server would be restarted.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import numpy as np
import pytest
from PIL import Image

from imgrec.core.images import load_image
from imgrec.core.samples import sample_path

pytestmark = pytest.mark.slow

SIZE = 96
PREDICT = [sys.executable, "-m", "imgrec", "predict"]
SERVE = [sys.executable, "-m", "imgrec", "serve", "--port", "0", "--json"]
TIMEOUT = 600  # seconds: the first training process imports TensorFlow on a busy machine


def crops(name: str, count: int, seed: int) -> list[bytes]:
    """``count`` distinct JPEG crops (half of them mirrored) of a sample photo."""
    image = load_image(sample_path(name))
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        height, width = image.shape[:2]
        side = int(min(height, width) * rng.uniform(0.5, 0.9))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        part = image[top : top + side, left : left + side]
        part = part[:, ::-1] if index % 2 else part
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(part)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


class Server:
    """``imgrec serve --projects DIR`` in a child process, which a test may kill."""

    def __init__(self, projects: Path) -> None:
        self.projects = projects
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*SERVE, "--projects", str(self.projects)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        self.url = json.loads(self.process.stdout.readline())["url"].rstrip("/")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)

    def client(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("teach") / "projects")
    running.start()
    yield running
    running.stop()


def _upload(http: httpx2.Client, project: str, class_name: str, images: list[bytes]) -> dict:
    files = [("file", (f"{class_name}{i}.jpg", data)) for i, data in enumerate(images)]
    answer = http.post(f"/api/projects/{project}/classes/{class_name}/samples", files=files)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _follow(http: httpx2.Client, project: str) -> tuple[list[str], dict]:
    """The event names of the project's stream until it closes, and the last run."""
    names, last = [], {}
    with http.stream("GET", f"/api/projects/{project}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
                names.append(event)
            elif line.startswith("data: ") and event in ("run", "end"):
                last = json.loads(line[len("data: ") :])
    return names, last


def _cat_and_coffee_project(http: httpx2.Client, name: str) -> str:
    project = http.post("/api/projects", json={"name": name, "image_size": SIZE}).json()["id"]
    _upload(http, project, "고양이", crops("chelsea", 8, seed=1))
    _upload(http, project, "coffee", crops("coffee", 8, seed=2))
    return project


def test_teach_a_model_download_it_and_predict_with_the_cli(server, tmp_path):
    """The issue's check: create, upload two classes, train, download, ``imgrec predict``."""
    with server.client() as http:
        project = _cat_and_coffee_project(http, "Cats or coffee")
        started = http.post(f"/api/projects/{project}/train", json={"epochs": 30})
        assert started.status_code == 202, started.text
        assert started.json()["state"] == "queued"
        names, run = _follow(http, project)
        assert names[0] == "project" and names[-1] == "end"
        assert run["state"] == "done", run
        assert len(run["history"]) == 30 and run["epoch"] == 30
        metrics = run["metrics"]
        assert metrics["classes"] == ["coffee", "고양이"]
        assert metrics["held_out"] == 2 and metrics["trained_on"] == 14  # 1 of 8 per class
        assert np.sum(metrics["confusion"]) == 2
        shown = http.get(f"/api/projects/{project}").json()
        assert shown["model"]["catalog_name"] == f"teach:{project}"
        menu = [m["name"] for m in http.get("/api/models").json()["models"]]
        assert f"teach:{project}" in menu
        download = http.get(f"/api/projects/{project}/model.keras")
        assert download.status_code == 200
        (tmp_path / "model.keras").write_bytes(download.content)
        photo = sample_path("chelsea").read_bytes()
        guess = http.post(f"/api/projects/{project}/predict", files={"file": ("cat.png", photo)})
        assert guess.status_code == 200, guess.text
        assert guess.json()["top"]["class"] == "고양이"
        assert guess.json()["cam"]["heatmap"].startswith("data:image/png;base64,")
        again = http.post("/api/projects", json={"name": "more", "from_model": f"teach:{project}"})
        assert again.status_code == 201, again.text
        assert [(c["name"], c["samples"]) for c in again.json()["classes"]] == [
            ("coffee", 8),
            ("고양이", 8),
        ]
    photos = [sample_path("chelsea"), sample_path("coffee")]
    result = subprocess.run(
        [*PREDICT, *photos, "--model", tmp_path / "model.keras", "--json", "--top", "1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    answers = [record["top"][0]["class"] for record in json.loads(result.stdout)]
    assert answers == ["고양이", "coffee"]


def _samples_on_disk(projects: Path, project: str) -> set[str]:
    return {p.stem for p in (projects / project).glob("[!.]*/*") if not p.name.startswith(".")}


def _list(http: httpx2.Client, project: str, class_name: str) -> list[dict]:
    return http.get(f"/api/projects/{project}/classes/{class_name}/samples").json()["samples"]


def _half_an_upload(url: str, project: str, class_name: str) -> socket.socket:
    """A connection that has sent half of an upload's body, and waits."""
    body = b"".join(crops("chelsea", 2, 6))
    head = (
        b'--cut\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n"
    )
    total = len(head) + len(body) + len(b"\r\n--cut--\r\n")
    address = urlsplit(url)
    connection = socket.create_connection((address.hostname, address.port))
    connection.sendall(
        f"POST /api/projects/{project}/classes/{class_name}/samples HTTP/1.1\r\n"
        f"Host: {address.netloc}\r\nContent-Length: {total}\r\n"
        "Content-Type: multipart/form-data; boundary=cut\r\n\r\n".encode()
        + head
        + body[: len(body) // 2]
    )
    return connection


def test_a_server_killed_during_a_training_and_an_upload_loses_nothing(server):
    """kill -9 while a run trains and an upload is half-way: every acknowledged sample
    is there after a restart, the run says interrupted, and resuming it finishes it."""
    with server.client() as http:
        project = _cat_and_coffee_project(http, "killed while training")
        acknowledged = {s["id"] for c in ("고양이", "coffee") for s in _list(http, project, c)}
        # Augmentation needs features of mirrored and cropped views, computed by the run.
        http.post(f"/api/projects/{project}/train", json={"augment": True, "epochs": 200})
        busy = http.post(f"/api/projects/{project}/train", json={})
        assert busy.status_code == 409 and "cancel it first" in busy.json()["error"]
        deadline = time.monotonic() + TIMEOUT
        while http.get(f"/api/projects/{project}/run").json()["state"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with _half_an_upload(server.url, project, "coffee"):
            time.sleep(0.3)
            server.kill()
    server.start()
    with server.client() as http:
        run = http.get(f"/api/projects/{project}/run").json()
        assert run["state"] == "interrupted" and run["resumable"] and not run["active"]
        listed = {s["id"] for c in ("고양이", "coffee") for s in _list(http, project, c)}
        assert listed == acknowledged == _samples_on_disk(server.projects, project)
        resumed = http.post(f"/api/projects/{project}/train", json={"resume": True})
        assert resumed.status_code == 202, resumed.text
        assert resumed.json()["id"] == run["id"]
        _, run = _follow(http, project)
        assert run["state"] == "done" and run["epoch"] == 200
