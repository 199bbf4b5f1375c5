"""Image URLs are fetched without reaching inside the network (imgrec.web.fetch).

Every fetch here goes to a real HTTP server on 127.0.0.1 (tests/local_http.py), which
records the paths it was asked for: a refused URL must not have been requested at all.
"""

from __future__ import annotations

import socket
import time

import pytest
from local_http import TRICKLE_INTERVAL, TRICKLE_SECONDS, image_server

from imgrec.web.fetch import (
    AllowList,
    FetchError,
    ForbiddenHostError,
    InvalidURLError,
    ResponseTooLargeError,
    fetch_url,
    is_public_address,
)

PHOTO = b"\x89PNG\r\n\x1a\n not really, but the fetcher does not look"
LOOPBACK = ("127.0.0.1",)


@pytest.fixture(scope="module")
def server():
    with image_server({"/photo.png": PHOTO}) as running:
        yield running


@pytest.fixture(autouse=True)
def _forget_requests(server):
    server.paths.clear()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata service
        ("100.64.0.1", False),  # carrier-grade NAT
        ("224.0.0.1", False),  # multicast
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        # IPv4-mapped: judged by the IPv4 address inside.
        ("::ffff:8.8.8.8", True),
        ("::ffff:7f00:1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:0.0.0.0", False),
        # IPv4-compatible (deprecated, ::/96): refused whatever it carries.
        ("::127.0.0.1", False),
        ("::7f00:1", False),
        ("::10.0.0.1", False),
        ("::169.254.169.254", False),
        ("::8.8.8.8", False),
        ("::", False),
        # NAT64, the well-known prefix: judged by the IPv4 address inside.
        ("64:ff9b::127.0.0.1", False),
        ("64:ff9b::7f00:1", False),
        ("64:ff9b::a9fe:a9fe", False),  # 169.254.169.254
        ("64:ff9b::c0a8:101", False),  # 192.168.1.1
        # NAT64 for local use (RFC 8215): not global.
        ("64:ff9b:1::808:808", False),
        ("64:ff9b:1::7f00:1", False),
        # 6to4: the IPv4 address in bits 16 to 48.
        ("2002:808:808::1", True),
        ("2002:a00:1::1", False),  # 10.0.0.1
        ("2002:a9fe:a9fe::", False),  # 169.254.169.254
        ("2002:c0a8:101:1::1", False),  # 192.168.1.1
        ("2002::1", False),  # 0.0.0.0
        # Teredo: the server and the (obfuscated) client address.
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # client 192.0.2.45
        ("2001:0:808:808:0:f7f7:80ff:fffe", False),  # client 127.0.0.1
        ("2001:0:7f00:1::1", False),  # server 127.0.0.1
        # ISATAP interface identifiers carrying a private IPv4 address.
        ("2a00:1450:4001::5efe:a00:1", False),  # 10.0.0.1
        ("2a00:1450:4001::200:5efe:7f00:1", False),  # 127.0.0.1
        ("2a00:1450:4001::5efe:808:808", True),  # 8.8.8.8
        # Zones, site-local, documentation, multicast, reserved.
        ("fe80::1%eth0", False),
        ("fe80::1%1", False),
        ("2001:4860:4860::8888%eth0", False),
        ("fec0::1", False),
        ("2001:db8::1", False),
        ("3fff::1", False),
        ("ff0e::1", False),
        ("ff02::1", False),
        ("5f00::1", False),
        ("100::1", False),
        ("4000::1", False),
        # IPv4 ranges that older Pythons call global.
        ("192.0.0.9", False),
        ("192.88.99.1", False),
        ("198.18.0.1", False),
        ("239.255.255.250", False),
        ("240.0.0.1", False),
    ],
)
def test_public_addresses(address, public):
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    "host",
    [
        # Odd IPv4 notations, as getaddrinfo reads them: all of them 127.0.0.1.
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "017700000001",
        "127.1",
        "127.0.1",
        # IPv6 forms that carry it.
        "[::127.0.0.1]",
        "[::7f00:1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b:1::7f00:1]",
        "[2002:7f00:1::1]",
        "[::1]",
        "[0::1]",
        "[fe80::1%lo]",
    ],
)
def test_every_notation_of_loopback_is_refused_before_connecting(server, host):
    port = server.server_address[1]
    with pytest.raises(ForbiddenHostError, match="not a public address"):
        fetch_url(f"http://{host}:{port}/photo.png")
    assert server.paths == []


def test_allow_list_takes_names_addresses_and_networks():
    import ipaddress

    allowed = AllowList(["LocalHost", "127.0.0.1", "10.1.0.0/16", "[::1]"])
    assert allowed.permits("localhost", ipaddress.ip_address("127.0.0.5"))
    assert allowed.permits("a.test", ipaddress.ip_address("127.0.0.1"))
    assert allowed.permits("a.test", ipaddress.ip_address("10.1.200.3"))
    assert allowed.permits("a.test", ipaddress.ip_address("::1"))
    assert not allowed.permits("a.test", ipaddress.ip_address("10.2.0.1"))
    assert not allowed.permits("a.test", ipaddress.ip_address("127.0.0.2"))


def test_fetches_from_an_allowed_host(server):
    assert fetch_url(f"{server.base}/photo.png", allow_hosts=LOOPBACK) == PHOTO
    assert server.paths == ["/photo.png"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "127.1"])
def test_loopback_is_refused_before_connecting(server, host):
    port = server.server_address[1]
    with pytest.raises(ForbiddenHostError, match="not a public address"):
        fetch_url(f"http://{host}:{port}/photo.png")
    assert server.paths == []


def test_metadata_address_is_refused():
    with pytest.raises(ForbiddenHostError, match=r"169\.254\.169\.254"):
        fetch_url("http://169.254.169.254/latest/meta-data/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "not file://"),
        ("ftp://example.org/cat.jpg", "not ftp://"),
        ("gopher://example.org/", "not gopher://"),
        ("javascript:alert(1)", "not javascript://"),
        ("example.org/cat.jpg", "starts with http://"),
        ("http:///cat.jpg", "names no host"),
        ("http://user:secret@example.org/cat.jpg", "user name or password"),
        ("http://example.org:99999/cat.jpg", "not a valid URL"),
        ("http://example.org/" + "a" * 3000, "longer than"),
    ],
)
def test_other_urls_are_invalid(url, message):
    with pytest.raises(InvalidURLError, match=message):
        fetch_url(url)


def test_redirect_to_a_non_public_host_is_refused(server):
    port = server.server_address[1]
    url = f"{server.base}/redirect?to=http://127.0.0.2:{port}/photo.png"
    with pytest.raises(ForbiddenHostError, match=r"127\.0\.0\.2"):
        fetch_url(url, allow_hosts=LOOPBACK)
    assert server.paths == [f"/redirect?to=http://127.0.0.2:{port}/photo.png"]


def test_redirect_to_another_scheme_is_refused(server):
    with pytest.raises(InvalidURLError, match="not file://"):
        fetch_url(f"{server.base}/redirect?to=file:///etc/passwd", allow_hosts=LOOPBACK)


def test_redirects_within_allowed_hosts_are_followed(server):
    assert fetch_url(f"{server.base}/redirect?to=/photo.png", allow_hosts=LOOPBACK) == PHOTO
    assert server.paths == ["/redirect?to=/photo.png", "/photo.png"]


def test_redirects_are_counted(server):
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch_url(f"{server.base}/loop", allow_hosts=LOOPBACK, max_redirects=3)
    assert len(server.paths) == 4


@pytest.mark.parametrize("route", ["sized", "stream"])
def test_long_bodies_are_cut_off(server, route):
    url = f"{server.base}/{route}?size=5000"
    assert len(fetch_url(url, allow_hosts=LOOPBACK, max_bytes=5000)) == 5000
    with pytest.raises(ResponseTooLargeError, match="4,999"):
        fetch_url(url, allow_hosts=LOOPBACK, max_bytes=4999)


def test_the_timeout_covers_the_whole_fetch(server):
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"no answer within 0\.5 s"):
        fetch_url(f"{server.base}/slow", allow_hosts=LOOPBACK, timeout=0.5)
    assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("kind", ["status", "headers", "continue", "chunks"])
def test_a_trickling_server_gets_one_deadline(server, kind):
    # A byte every 0.1 s keeps each read well within any socket timeout: only a
    # deadline for the whole fetch ends it, well before the server would stop.
    assert TRICKLE_INTERVAL < 0.5 < TRICKLE_SECONDS - 2
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"no answer within 0\.5 s"):
        fetch_url(f"{server.base}/trickle/{kind}", allow_hosts=LOOPBACK, timeout=0.5)
    assert time.monotonic() - start < 0.5 + 1.5


def test_a_slow_resolver_counts_against_the_deadline(monkeypatch):
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(host, *args, **kwargs):
        if host == "slow.test":
            time.sleep(3)
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"no answer within 0\.5 s"):
        fetch_url("http://slow.test/photo.png", allow_hosts=LOOPBACK, timeout=0.5)
    assert time.monotonic() - start < 0.5 + 1.5


def test_the_connection_goes_to_the_checked_socket_address(server, monkeypatch):
    # Nothing resolves the name again: connect gets the very tuple that was checked.
    connected = []
    real_connect = socket.socket.connect

    def recording_connect(sock, address):
        connected.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    assert fetch_url(f"{server.base}/photo.png", allow_hosts=LOOPBACK) == PHOTO
    assert connected == [("127.0.0.1", server.server_address[1])]


def test_error_statuses_fail(server):
    with pytest.raises(FetchError, match="answered 404"):
        fetch_url(f"{server.base}/missing.png", allow_hosts=LOOPBACK)


def test_unresolvable_hosts_fail():
    with pytest.raises(ForbiddenHostError, match="cannot resolve"):
        fetch_url("http://no-such-host.invalid/cat.jpg")


def test_the_request_names_the_host_the_connection_goes_to_the_checked_address(server, monkeypatch):
    # DNS rebinding needs a name server that answers differently the second time; there
    # is none on this machine, so the resolver is replaced by one that does exactly that.
    # The fetcher must resolve once and connect to that first answer.
    port = server.server_address[1]
    answers = iter(["127.0.0.1", "127.0.0.2"])
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_getaddrinfo(host, *args, **kwargs):
        if host == "images.test":
            host = next(answers)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    body = fetch_url(f"http://images.test:{port}/host", allow_hosts=["127.0.0.1"])
    assert body == f"images.test:{port}".encode()
    assert next(answers) == "127.0.0.2"  # resolved exactly once


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="timeout"):
        fetch_url("http://example.org/", timeout=0)
