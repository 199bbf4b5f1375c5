"""The Teach API's projects without training: names, quotas, uploads, the folder on disk.

In-process (FastAPI's TestClient) with ``teach_workers=False``: nothing here imports
TensorFlow's networks or starts a child process, so the whole file takes seconds.
Training, kills and restarts are in ``test_teach_api.py`` against a real server.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgrec.core.storage import atomic_path
from imgrec.datasets.folders import read_folder
from imgrec.web.app import create_app
from imgrec.web.teach.service import TeachConfig
from imgrec.web.teach.store import Quota, check_class_name


def _png(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(_png(seed))).save(buffer, format="JPEG")
    return buffer.getvalue()


QUOTA = Quota(max_projects=3, max_samples=6, max_bytes=200_000, max_classes=3)


@pytest.fixture()
def teach(tmp_path):
    config = TeachConfig(projects_dir=tmp_path / "projects", quota=QUOTA, workers=False)
    app = create_app(teach=config)
    with TestClient(app) as client:
        yield client, tmp_path / "projects"


def _new_project(client: TestClient, name: str = "test") -> str:
    answer = client.post("/api/projects", json={"name": name, "image_size": 96})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _upload(client: TestClient, project: str, class_name: str, *images: bytes):
    files = [("file", (f"photo{i}.png", data)) for i, data in enumerate(images)]
    return client.post(f"/api/projects/{project}/classes/{class_name}/samples", files=files)


def test_a_project_is_a_class_folder_that_imgrec_train_reads(teach):
    client, root = teach
    project = _new_project(client)
    assert _upload(client, project, "고양이", _png(1), _jpeg(2)).status_code == 201
    answer = _upload(client, project, "coffee", _png(3))
    assert answer.status_code == 201
    shown = answer.json()["project"]
    assert [(c["name"], c["samples"]) for c in shown["classes"]] == [("coffee", 1), ("고양이", 2)]
    assert shown["samples"] == 3 and shown["run"] is None and shown["model"] is None
    stored = sorted(p.parent.name for p in (root / project).glob("[!.]*/*"))
    assert stored == ["coffee", "고양이", "고양이"]
    assert {p.suffix for p in (root / project / "고양이").iterdir()} == {".png", ".jpg"}
    data = read_folder(root / project, image_size=(32, 32), channels=3, progress=False)
    assert data.class_names == ("coffee", "고양이")
    assert len(data.parts["train"].labels) == 3


def test_samples_are_listed_served_thumbnailed_zipped_and_deleted(teach):
    client, _ = teach
    project = _new_project(client)
    added = _upload(client, project, "cat", _png(1, 200), _png(2)).json()["added"]
    _upload(client, project, "dog", _png(3))
    listed = client.get(f"/api/projects/{project}/classes/cat/samples").json()
    assert [s["id"] for s in listed["samples"]] == [s["id"] for s in added]
    assert client.get(added[0]["url"]).content == _png(1, 200)
    thumb = Image.open(io.BytesIO(client.get(added[0]["thumbnail"]).content))
    assert thumb.format == "PNG" and max(thumb.size) == 96
    archive = zipfile.ZipFile(
        io.BytesIO(client.get(f"/api/projects/{project}/samples.zip").content)
    )
    assert sorted(name.split("/")[0] for name in archive.namelist()) == ["cat", "cat", "dog"]
    answer = client.delete(added[0]["url"])
    assert answer.status_code == 200 and answer.json()["samples"] == 2
    assert client.get(added[0]["url"]).status_code == 404


def test_classes_are_added_renamed_and_deleted(teach):
    client, root = teach
    project = _new_project(client)
    assert client.post(f"/api/projects/{project}/classes", json={"name": "cat"}).status_code == 201
    again = client.post(f"/api/projects/{project}/classes", json={"name": "CAT"})
    assert again.status_code == 409 and "cat" in again.json()["error"]
    _upload(client, project, "cat", _png(1))
    renamed = client.patch(f"/api/projects/{project}/classes/cat", json={"name": "kitten"})
    assert [c["name"] for c in renamed.json()["classes"]] == ["kitten"]
    assert len(list((root / project / "kitten").iterdir())) == 1
    gone = client.delete(f"/api/projects/{project}/classes/kitten")
    assert gone.json()["classes"] == [] and not (root / project / "kitten").exists()
    assert client.delete(f"/api/projects/{project}/classes/kitten").status_code == 404


@pytest.mark.parametrize(
    "name",
    ["..", ".", "a/b", "a\\b", "nul\x00byte", "x" * 65, "", " cat", ".hidden", "train", "Val"],
)
def test_hostile_class_names_are_refused(name):
    with pytest.raises(Exception, match="class name"):
        check_class_name(name)


def test_hostile_names_never_reach_the_disk(teach):
    client, root = teach
    project = _new_project(client)
    for name in ["..", "a/b", "nul\x00byte", "x" * 65, "", ".teach", "train"]:
        answer = client.post(f"/api/projects/{project}/classes", json={"name": name})
        assert answer.status_code == 422, (name, answer.text)
        assert "error" in answer.json()
    # In the URL: an encoded separator or dot-name is one segment, refused or unknown.
    for segment in ["%2e%2e", "..%2F..%2Fetc", "a%2Fb", "%00", "x" * 300]:
        answer = _upload(client, project, segment, _png(1))
        assert answer.status_code in (404, 422), (segment, answer.text)
    for bad_id in ["..", "%2e%2e", "p-000000000000", ".teach"]:
        assert client.get(f"/api/projects/{bad_id}").status_code == 404
    assert sorted(p.name for p in root.iterdir()) == [project]
    assert sorted(p.name for p in (root / project).iterdir()) == [".teach"]
    assert check_class_name("고양이") == "고양이"
    assert _upload(client, project, "고양이", _png(1)).status_code == 201


def test_quotas_are_kept_with_clear_errors(teach):
    client, _ = teach
    project = _new_project(client)
    assert _upload(client, project, "a", *[_png(i) for i in range(4)]).status_code == 201
    over = _upload(client, project, "b", _png(10), _png(11), _png(12))
    assert over.status_code == 413 and "6 images at most" in over.json()["error"]
    big = _upload(client, project, "b", _png(20, 250))  # ~190 kB: over 200 kB in all
    assert big.status_code == 413 and "bytes" in big.json()["error"]
    for name in ("b", "c"):
        assert (
            client.post(f"/api/projects/{project}/classes", json={"name": name}).status_code == 201
        )
    too_many = client.post(f"/api/projects/{project}/classes", json={"name": "d"})
    assert too_many.status_code == 413 and "3 classes" in too_many.json()["error"]
    assert client.get(f"/api/projects/{project}").json()["samples"] == 4
    _new_project(client, "two"), _new_project(client, "three")
    fourth = client.post("/api/projects", json={"name": "four"})
    assert fourth.status_code == 413 and "3 projects" in fourth.json()["error"]


def test_an_upload_with_one_bad_file_stores_nothing(teach):
    client, root = teach
    project = _new_project(client)
    answer = _upload(client, project, "cat", _png(1), b"not an image at all")
    assert answer.status_code == 422 and "photo1.png" in answer.json()["error"]
    assert client.get(f"/api/projects/{project}").json()["samples"] == 0
    assert not (root / project / "cat").exists()


def test_half_written_samples_are_never_listed_and_swept_on_start(teach, tmp_path):
    client, root = teach
    project = _new_project(client)
    _upload(client, project, "cat", _png(1))
    with (
        pytest.raises(KeyboardInterrupt),
        atomic_path(root / project / "cat" / "s-0123456789abcdef.png") as tmp,
    ):
        tmp.write_bytes(_png(2)[:100])
        leftover = tmp
        raise KeyboardInterrupt  # a kill in the middle: the rename never happens
    # atomic_path cleans up after an exception; a kill -9 would leave the file: make one.
    leftover.write_bytes(_png(2)[:100])
    assert client.get(f"/api/projects/{project}").json()["samples"] == 1
    restarted = create_app(teach=TeachConfig(projects_dir=root, workers=False))
    assert restarted.state.teach.store.root == root  # the store starts on first use
    assert not leftover.exists()


def test_train_needs_two_classes_with_samples_and_valid_options(teach):
    client, _ = teach
    project = _new_project(client)
    _upload(client, project, "cat", _png(1))
    client.post(f"/api/projects/{project}/classes", json={"name": "dog"})
    lonely = client.post(f"/api/projects/{project}/train", json={})
    assert lonely.status_code == 422 and "two classes" in lonely.json()["error"]
    _upload(client, project, "dog", _png(2))
    for options in ({"backbone": "resnet50"}, {"epochs": 0}, {"image_size": 32}, {"x": 1}):
        answer = client.post(f"/api/projects/{project}/train", json=options)
        assert answer.status_code == 422, (options, answer.text)
    assert client.post(f"/api/projects/{project}/train/cancel").status_code == 409
    assert client.get(f"/api/projects/{project}/model.keras").status_code == 404
    resume = client.post(f"/api/projects/{project}/train", json={"resume": True})
    assert resume.status_code == 409


def test_the_teach_routes_are_in_the_api_description(teach):
    client, _ = teach
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/projects",
        "/api/projects/{project_id}/classes/{class_name}/samples",
        "/api/projects/{project_id}/train",
        "/api/projects/{project_id}/events",
        "/api/projects/{project_id}/model.keras",
    ):
        assert path in paths


def test_a_run_can_be_cancelled_resumed_and_followed(teach):
    client, root = teach
    project = _new_project(client)
    _upload(client, project, "cat", _png(1), _png(2))
    _upload(client, project, "dog", _png(3), _png(4))
    started = client.post(f"/api/projects/{project}/train", json={"epochs": 5})
    assert started.status_code == 202 and started.json()["state"] == "queued"
    assert started.json()["active"] and not started.json()["resumable"]
    cancelled = client.post(f"/api/projects/{project}/train/cancel")
    assert cancelled.status_code == 200, cancelled.text
    run = cancelled.json()
    assert run["state"] == "cancelled" and run["resumable"] and not run["active"]
    assert client.get(f"/api/projects/{project}/run").json()["state"] == "cancelled"
    on_disk = (root / project / ".teach" / "runs" / run["id"] / "run.json").read_text()
    assert '"cancelled"' in on_disk
    with client.stream("GET", f"/api/projects/{project}/events") as stream:
        events = [line for line in stream.iter_lines() if line.startswith("event: ")]
    assert events == ["event: project", "event: run", "event: end"]
    resumed = client.post(f"/api/projects/{project}/train", json={"resume": True})
    assert resumed.status_code == 202 and resumed.json()["id"] == run["id"]
    assert resumed.json()["resumed"] == 1
    assert client.post(f"/api/projects/{project}/train/cancel").json()["state"] == "cancelled"
