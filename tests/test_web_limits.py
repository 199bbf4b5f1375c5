"""The web server's limits under hostile or heavy traffic (imgrec.web.limits, inputs).

Nothing here loads a network: each refusal comes before a model is needed, or the
limit is exercised on its own. URLs go to a real HTTP server on loopback
(tests/local_http.py); the slow-body test talks to uvicorn on a loopback socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from local_http import image_server

from imgrec.models.preprocessing import Preprocessing, torchvision_imagenet
from imgrec.web import limits
from imgrec.web.app import create_app
from imgrec.web.inputs import decode_side, model_view
from imgrec.web.limits import DecodeBudget, DecodeTooLargeError, ServerBusyError, Slots
from imgrec.web.server import uvicorn_config


@pytest.fixture(scope="module")
def server():
    with image_server({"/photo.png": b"not fetched in these tests"}) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> TestClient:
    return TestClient(create_app(allow_hosts=["127.0.0.1"], fetch_timeout=1.0, max_fetches=1))


# ---- a form field given twice ------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "fields", "twice"),
    [
        ("/api/predict", [("sample", "chelsea"), ("sample", "coffee")], "sample"),
        ("/api/predict", [("sample", "chelsea"), ("model", "a"), ("model", "b")], "model"),
        ("/api/predict", [("url", "http://a.test/1"), ("url", "http://a.test/2")], "url"),
        ("/api/predict", [("sample", "chelsea"), ("top", "1"), ("top", "3")], "top"),
        ("/api/explain", [("sample", "chelsea"), ("sample", "coffee")], "sample"),
        ("/api/explain", [("sample", "chelsea"), ("method", "cam"), ("method", "x")], "method"),
        ("/api/activations", [("sample", "a"), ("layer", "x"), ("layer", "y")], "layer"),
    ],
)
def test_a_form_field_given_twice_is_refused(client, route, fields, twice):
    # As a URL-encoded form and as a multipart one (with a file among the fields).
    for files in [None, {"extra": ("a.txt", b"x")}]:
        response = client.post(
            route,
            content=None if files else "&".join(f"{k}={v}" for k, v in fields),
            headers=None if files else {"Content-Type": "application/x-www-form-urlencoded"},
            data=_multi(fields) if files else None,
            files=files,
        )
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": f"the form field {twice!r} is given 2 times; give it once"
        }


def _multi(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in fields:
        grouped.setdefault(key, []).append(value)
    return grouped


def test_two_files_are_refused(client):
    response = client.post(
        "/api/predict", files=[("file", ("a.png", b"a")), ("file", ("b.png", b"b"))]
    )
    assert response.status_code == 400
    assert "error" in response.json()


# ---- URL fetches: one deadline, a bound on how many at once --------------------------------


@pytest.mark.slow
def test_a_trickling_url_is_answered_within_the_fetch_limit(client, server):
    start = time.monotonic()
    response = client.post(
        "/api/predict", data={"url": f"{server.base}/trickle/headers", "model": "mobilenet_v2"}
    )
    assert time.monotonic() - start < 1.0 + 2
    assert response.status_code == 422
    assert response.json()["error"] == f"{server.base}/trickle/headers: no answer within 1 s"


@pytest.mark.slow
def test_fetches_beyond_the_bound_get_a_503(client, server):
    url = f"{server.base}/trickle/status"
    answers = []
    first = threading.Thread(
        target=lambda: answers.append(client.post("/api/predict", data={"url": url}))
    )
    first.start()
    time.sleep(0.4)  # the first fetch holds the only slot for a second
    busy = client.post("/api/predict", data={"url": url})
    first.join()
    assert busy.status_code == 503
    assert busy.json() == {
        "error": "the server is busy: it takes 1 image URLs to fetch at once; try again shortly"
    }
    assert busy.headers["Retry-After"] == "5"
    assert answers[0].status_code == 422  # the first one timed out on its own
    # The slot is free again.
    again = client.post("/api/predict", data={"url": url})
    assert again.status_code == 422


def test_slots_refuse_at_once_and_free_on_exit():
    slots = Slots(2, "things")
    busy = pytest.raises(ServerBusyError, match="it takes 2 things at once")
    with slots.hold(), slots.hold(), busy, slots.hold():
        pass
    with slots.hold():
        pass
    with pytest.raises(ValueError):
        Slots(0, "things")


# ---- the decoding budget -----------------------------------------------------------------


def test_an_image_over_the_whole_budget_is_413():
    budget = DecodeBudget(1000, slots=2, wait=0)
    too_large = pytest.raises(DecodeTooLargeError, match=r"^big\.png: decoding it would take")
    with too_large, budget.admit(1001, "big.png"):
        pass


def test_no_room_within_the_wait_is_503():
    budget = DecodeBudget(1000, slots=4, wait=0.2)
    with budget.admit(600, "a.png"):
        start = time.monotonic()
        busy = pytest.raises(ServerBusyError, match=r"^b\.png: the server is busy decoding")
        with busy, budget.admit(600, "b.png"):
            pass
        assert 0.2 <= time.monotonic() - start < 2
        with budget.admit(400, "c.png"):  # what fits beside a.png is admitted
            pass


def test_slots_bound_decoding_too():
    budget = DecodeBudget(10_000, slots=1, wait=0.1)
    with budget.admit(1, "a.png"), pytest.raises(ServerBusyError), budget.admit(1, "b"):
        pass


def test_requests_are_admitted_in_order():
    # A big request that waits for room is not overtaken by small ones behind it.
    budget = DecodeBudget(1000, slots=4, wait=5)
    order = []
    holding = budget.admit(600, "first")
    holding.__enter__()

    def enter(name: str, cost: int) -> None:
        with budget.admit(cost, name):
            order.append(name)
            time.sleep(0.05)

    big = threading.Thread(target=enter, args=("big", 900))
    big.start()
    time.sleep(0.2)
    small = threading.Thread(target=enter, args=("small", 100))
    small.start()
    time.sleep(0.2)
    assert order == []  # small would fit beside "first", but big came before it
    holding.__exit__(None, None, None)
    big.join()
    small.join()
    assert order == ["big", "small"]


def test_memory_goes_back_when_decoding_is_idle(monkeypatch):
    calls = []
    monkeypatch.setattr(limits, "release_memory", lambda: calls.append(1))
    budget = DecodeBudget(1000, slots=4, wait=0)
    with budget.admit(100, "a"):
        with budget.admit(100, "b"):
            pass
        assert calls == []  # a is still decoding
    assert calls == [1]


def test_release_memory_runs_wherever_the_tests_run():
    limits.release_memory()


# ---- what waits for the network is small --------------------------------------------------


def test_a_stretch_recipe_gets_its_input_size_at_once():
    recipe = Preprocessing(size=(32, 48))
    photo = np.random.default_rng(0).integers(0, 255, (500, 300, 3), dtype=np.uint8)
    small = model_view(recipe, photo)
    assert small.shape == (32, 48, 3)
    np.testing.assert_array_equal(recipe([small]), recipe([photo]))
    assert decode_side(recipe) == 48


def test_a_short_side_recipe_keeps_ordinary_photos_as_they_are():
    recipe = torchvision_imagenet()
    photo = np.random.default_rng(0).integers(0, 255, (300, 451, 3), dtype=np.uint8)
    assert model_view(recipe, photo) is photo
    assert decode_side(recipe) == 256


def test_a_long_strip_keeps_only_what_the_crop_can_reach():
    recipe = torchvision_imagenet()
    rng = np.random.default_rng(0)
    strip = np.repeat(rng.integers(0, 255, (1, 6000, 3), dtype=np.uint8), 300, axis=0)
    strip[100:200, 2900:3100] = 255  # something in the middle, where the crop looks
    small = model_view(recipe, strip)
    assert small.shape[0] == 300 and 300 <= small.shape[1] < 400
    assert small.flags.c_contiguous
    difference = np.abs(recipe([small]) - recipe([strip]))
    assert difference.mean() < 0.05  # the same picture, give or take a sub-pixel shift
    tall = np.ascontiguousarray(strip.transpose(1, 0, 2))
    assert model_view(recipe, tall).shape[1] == 300


# ---- a body that trickles -------------------------------------------------------------------


@contextlib.contextmanager
def _uvicorn(app, **settings):
    """``app`` served by uvicorn on a loopback port, as ``imgrec serve`` configures it."""
    import uvicorn

    config = uvicorn_config(app, host="127.0.0.1", port=0, log_level="warning", **settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.slow
def test_a_trickled_body_gets_a_408():
    with (
        _uvicorn(create_app(body_timeout=1.0)) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
        )
        start = time.monotonic()
        answer = _trickle_until_answered(sock, seconds=8)
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert answer.endswith(b'{"error":"the request\'s body took longer than 1 s to arrive"}')
    assert elapsed < 1.0 + 2


@pytest.mark.slow
def test_trickled_headers_get_the_connection_closed():
    slow = b"GET /api/samples HTTP/1.1\r\nX-Slow: " + b"a" * 200
    quick = b"GET /api/samples HTTP/1.1\r\nHost: x\r\n\r\n"
    with _uvicorn(create_app(), header_timeout=1.0) as port:
        for answered_before in [0, 1]:  # a fresh connection, then a kept-alive one
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                for _ in range(answered_before):
                    sock.sendall(quick)
                    assert _read_answer(sock).startswith(b"HTTP/1.1 200 ")
                start = time.monotonic()
                assert _trickle_until_closed(sock, slow)
                assert time.monotonic() - start < 1.0 + 2
        # Headers in time are answered, again and again on one connection.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(quick)
                answer = _read_answer(sock)
                assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
                time.sleep(0.5)


def _trickle_until_closed(sock: socket.socket, data: bytes) -> bool:
    """Send ``data`` a byte every 0.1 s; whether the server closed the connection first."""
    sock.settimeout(0.1)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def _read_answer(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    answer = b""
    while True:
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = [line for line in lines if line.startswith(b"content-length:")]
        if length and len(body) >= int(length[0].split(b":")[1]):
            return answer
        received = sock.recv(65536)
        if not received:
            return answer
        answer += received


def _trickle_until_answered(sock: socket.socket, seconds: float) -> bytes:
    """Send a byte every 0.1 s until a whole response is back (or ``seconds`` pass)."""
    answer = b""
    stop = time.monotonic() + seconds
    sock.settimeout(0.1)
    while time.monotonic() < stop:
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = [line for line in lines if line.startswith(b"content-length:")]
        if length and len(body) >= int(length[0].split(b":")[1]):
            break
        with contextlib.suppress(OSError):  # the server stopped reading: its answer is coming
            sock.sendall(b"a")
        try:
            received = sock.recv(4096)
        except TimeoutError:
            continue
        if not received:
            break
        answer += received
    return answer
