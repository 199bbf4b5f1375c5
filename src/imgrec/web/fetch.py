"""Fetch an image from a URL that a stranger typed, without letting it reach inside.

A server that downloads whatever URL a page sends it is a proxy into the network it
sits in (server-side request forgery): ``http://169.254.169.254/`` is a cloud
machine's metadata service, ``http://127.0.0.1:6379/`` a database that trusts its own
host. ``fetch_url`` therefore:

- accepts only ``http`` and ``https`` URLs, without credentials;
- resolves the host name once, refuses it if any of its addresses is not globally
  routable (``is_public_address``: loopback, private, link-local, multicast, reserved,
  documentation, and every IPv6 form that carries such an IPv4 address: mapped,
  compatible, NAT64, 6to4, Teredo, ISATAP), unless an allow-list names it; odd IPv4
  notations (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) are judged by the
  address they resolve to, so they cannot slip past;
- connects to the socket address it checked, not to the name again, so a DNS answer
  that changes between the check and the connection (DNS rebinding) cannot slip
  through; the request still carries the host name (``Host`` header, TLS server name
  and certificate check);
- follows redirects itself, at most ``max_redirects``, checking every hop the same way;
- gives up after ``timeout`` seconds in all, whatever the server trickles: the name
  resolution, the connection, the TLS handshake and every read and write (status
  line, headers, ``100 Continue``, chunk sizes, body) share one deadline;
- gives up after ``max_bytes`` bytes, before reading them when the response announces
  them.

Only the standard library is used: ``http.client`` reads no proxy settings from the
environment and follows no redirects on its own, which is what is wanted here.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from imgrec.core.errors import ImgrecError

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_MAX_REDIRECTS = 5
MAX_URL_LENGTH = 2048

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
# Name resolution runs in these threads, so that a fetch can stop waiting for a slow
# resolver at its deadline (the resolver itself gives up on its own schedule).
_RESOLVER_THREADS = 8

# The well-known NAT64 prefix (RFC 6052): the connection goes to the IPv4 address inside.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Not globally routable, although older Pythons' ``is_global`` may say they are.
_NOT_GLOBAL_V6 = tuple(
    ipaddress.ip_network(network)
    for network in (
        "::/96",  # IPv4-compatible (deprecated, RFC 4291), with :: and ::1
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 segment identifiers (RFC 9602)
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
    )
)
_NOT_GLOBAL_V4 = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "198.18.0.0/15",  # benchmarking
    )
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(ImgrecError):
    """A URL could not be fetched: unreachable, too slow, or not answered with 200."""


class InvalidURLError(FetchError):
    """Not an ``http``/``https`` URL with a host, or one that carries credentials."""


class ForbiddenHostError(FetchError):
    """The URL's host is, or resolves to, an address that is not public."""


class ResponseTooLargeError(FetchError):
    """The response is longer than the byte cap."""


def is_public_address(address: str | Address) -> bool:
    """Whether ``address`` is a globally routable unicast address a fetch may connect to.

    ``ipaddress``'s notion of global is the start; on top of it every IPv6 form that
    carries an IPv4 address is judged by that IPv4 address, since the connection may
    end up there: IPv4-mapped (``::ffff:127.0.0.1``), the well-known NAT64 prefix
    (``64:ff9b::7f00:1``), 6to4 (``2002:7f00:1::``), Teredo (server and client) and
    ISATAP interface identifiers (``...:5efe:10.0.0.1``). IPv4-compatible addresses
    (``::127.0.0.1``, deprecated), local-use NAT64, site-local and documentation
    prefixes are refused whatever they carry, and so is an address with a zone
    (``fe80::1%eth0``): zones belong to link-local addresses.

    Args:
        address: an IPv4 or IPv6 address, as text or an ``ipaddress`` object.

    Returns:
        False for loopback, private, link-local, shared (carrier NAT), multicast,
        reserved, unspecified and documentation addresses, and for IPv6 forms that
        carry one; True otherwise.

    Raises:
        ValueError: ``address`` is not an IP address.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip.version == 4:
        return _public_v4(ip)
    if ip.scope_id:
        return False
    carried = ip.ipv4_mapped or (_low_ipv4(ip) if ip in _NAT64 else None)
    if carried is not None:
        return _public_v4(carried)
    if any(ip in network for network in _NOT_GLOBAL_V6):
        return False
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return False
    return all(_public_v4(inner) for inner in _embedded_ipv4(ip))


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return False
    return not any(ip in network for network in _NOT_GLOBAL_V4)


def _low_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a global IPv6 address carries: 6to4, Teredo, ISATAP."""
    inner = [ip.sixtofour, *(ip.teredo or ())]
    # ISATAP (RFC 5214): an interface identifier of 0000:5efe or 0200:5efe (the
    # universal/local and group bits may be set), then the IPv4 address.
    if (int(ip) >> 32) & 0xFCFFFFFF == 0x00005EFE:
        inner.append(_low_ipv4(ip))
    return [address for address in inner if address is not None]


class AllowList:
    """Hosts a fetch may reach even though they are not public (for tests, intranets).

    Args:
        entries: host names (``"localhost"``: whatever it resolves to), IP addresses
            (``"127.0.0.1"``) or networks (``"10.1.0.0/16"``).
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        names: set[str] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        self.names = frozenset(names)
        self.networks = tuple(networks)

    def permits(self, host: str, address: Address) -> bool:
        """Whether a URL naming ``host`` may connect to ``address``."""
        if is_public_address(address) or host.rstrip(".") in self.names:
            return True
        bare = ipaddress.ip_address(str(address).split("%", 1)[0])  # a zone is no network
        return any(bare in network for network in self.networks)


@dataclass(frozen=True)
class _Target:
    url: str
    https: bool
    host: str
    port: int
    path: str


def fetch_url(
    url: str,
    *,
    allow_hosts: AllowList | Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
) -> bytes:
    """Download the body of ``url`` under the rules in this module's docstring.

    Args:
        url: an ``http://`` or ``https://`` URL, at most ``MAX_URL_LENGTH`` characters.
        allow_hosts: host names, addresses or networks that may be reached although
            they are not public, as an ``AllowList`` or its entries.
        timeout: seconds for the whole fetch: name resolution, connections, TLS
            handshakes, every read and write, redirects included.
        max_bytes: the longest body accepted.
        max_redirects: how many redirects are followed.

    Returns:
        The body of the final response, which had status 200.

    Raises:
        ValueError: ``timeout``, ``max_bytes`` or ``max_redirects`` out of range.
        InvalidURLError: not an http(s) URL with a host, credentials in it, too long,
            or a redirect to such a URL.
        ForbiddenHostError: the host (of the URL or of a redirect) is not public and
            not allowed, or does not resolve.
        ResponseTooLargeError: the body is longer than ``max_bytes``.
        FetchError: connection failure, TLS failure, timeout, too many redirects, or
            a status other than 200. Every message starts with the URL at fault.
    """
    if timeout <= 0 or max_bytes < 1 or max_redirects < 0:
        raise ValueError(
            f"need timeout > 0, max_bytes >= 1, max_redirects >= 0; got {timeout}, "
            f"{max_bytes}, {max_redirects}"
        )
    allowed = allow_hosts if isinstance(allow_hosts, AllowList) else AllowList(allow_hosts)
    deadline = time.monotonic() + timeout
    current = url
    for _ in range(max_redirects + 1):
        target = _parse(current)
        try:
            address = _checked_address(target, allowed, deadline)
            answer = _get(target, address, deadline, max_bytes)
        except TimeoutError as err:
            raise FetchError(f"{target.url}: no answer within {timeout:g} s") from err
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise FetchError(f"{target.url}: cannot fetch it ({err})") from err
        if isinstance(answer, bytes):
            return answer
        current = urljoin(target.url, answer)
    raise FetchError(f"{url}: more than {max_redirects} redirects")


def _parse(url: str) -> _Target:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURLError(f"{url[:80]}...: URL longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:
        raise InvalidURLError(f"{url}: not a valid URL ({err})") from err
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURLError(f"{url}: not a URL; give one that starts with http:// or https://")
    if scheme not in ("http", "https"):
        raise InvalidURLError(f"{url}: only http:// and https:// URLs are fetched, not {scheme}://")
    if not parts.hostname:
        raise InvalidURLError(f"{url}: the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidURLError(f"{url}: URLs with a user name or password are not fetched")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    https = scheme == "https"
    return _Target(url, https, parts.hostname, port or (443 if https else 80), path)


@dataclass(frozen=True)
class _SocketAddress:
    """One answer of ``getaddrinfo``: what ``socket.connect`` takes, exactly as checked."""

    family: int
    sockaddr: tuple[Any, ...]


def _checked_address(target: _Target, allowed: AllowList, deadline: float) -> _SocketAddress:
    """Resolve the target's host once; every address must be allowed; return the first."""
    try:
        infos = _resolve(target.host, target.port, deadline)
    except (OSError, UnicodeError) as err:
        if isinstance(err, TimeoutError):
            raise
        raise ForbiddenHostError(f"{target.url}: cannot resolve {target.host!r} ({err})") from err
    checked = []
    for family, _, _, _, sockaddr in infos:
        text = str(sockaddr[0])
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if family == socket.AF_INET6 and sockaddr[3]:  # a zone: the scope id
            address = ipaddress.IPv6Address(f"{address}%{sockaddr[3]}")
        if not allowed.permits(target.host, address):
            raise ForbiddenHostError(
                f"{target.url}: refused, {target.host} is {address}, which is not a public "
                "address (loopback, private, link-local or reserved)"
            )
        checked.append(_SocketAddress(family, tuple(sockaddr)))
    if not checked:
        raise ForbiddenHostError(f"{target.url}: {target.host!r} resolves to no address")
    return checked[0]


_resolver: ThreadPoolExecutor | None = None
_resolver_guard = threading.Lock()


def _resolve(host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` for a TCP connection, waited for until ``deadline`` at most."""
    global _resolver
    with _resolver_guard:
        if _resolver is None:
            _resolver = ThreadPoolExecutor(_RESOLVER_THREADS, thread_name_prefix="imgrec-resolve")
        pool = _resolver
    answer = pool.submit(
        socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    try:
        return answer.result(timeout=_remaining(deadline))
    except FutureTimeout as err:
        answer.cancel()
        raise TimeoutError(f"resolving {host!r} took too long") from err


def _get(target: _Target, address: _SocketAddress, deadline: float, max_bytes: int) -> bytes | str:
    """GET the target at ``address``: the body, or the ``Location`` of a redirect."""
    connection_type = _PinnedHTTPSConnection if target.https else _PinnedHTTPConnection
    connection = connection_type(target.host, target.port, address, deadline)
    try:
        connection.request(
            "GET",
            target.path,
            headers={"User-Agent": "imgrec", "Accept": "image/*", "Accept-Encoding": "identity"},
        )
        response = connection.getresponse()
        if response.status in _REDIRECT_STATUSES and response.getheader("Location"):
            return response.getheader("Location", "")
        if response.status != 200:
            raise FetchError(
                f"{target.url}: the server answered {response.status} {response.reason}"
            )
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLargeError(
                f"{target.url}: the response is {int(declared):,} bytes, the limit is {max_bytes:,}"
            )
        body = bytearray()
        while chunk := response.read1(_CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise ResponseTooLargeError(
                    f"{target.url}: the response is longer than the limit of {max_bytes:,} bytes"
                )
        return bytes(body)
    finally:
        connection.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch's time is up")
    return left


# ---- sockets that share one deadline -------------------------------------------------
# A socket's timeout bounds each call, and http.client reads the status line, every
# header, every "100 Continue" and every chunk size with calls of their own: a server
# sending one byte just before each timeout would hold a fetch for as long as it likes.
# These sockets set the timeout to what is left of the fetch before every call, so all
# of them together end by the deadline. (One CPython call on a socket with a timeout,
# sendall and the TLS handshake included, ends by that timeout.)


class _DeadlineSocket(socket.socket):
    """A socket whose blocking calls all end by ``deadline`` (``time.monotonic``)."""

    deadline = math.inf

    def _arm(self) -> None:
        self.settimeout(_remaining(self.deadline))

    def recv(self, *args: Any) -> bytes:
        self._arm()
        return super().recv(*args)

    def recv_into(self, *args: Any) -> int:
        self._arm()
        return super().recv_into(*args)

    def send(self, *args: Any) -> int:
        self._arm()
        return super().send(*args)

    def sendall(self, *args: Any) -> None:
        self._arm()
        super().sendall(*args)

    def connect(self, address: Any) -> None:
        self._arm()
        super().connect(address)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """A TLS socket whose blocking calls all end by ``deadline``, the handshake included."""

    deadline = math.inf

    def _arm(self) -> None:
        self.settimeout(_remaining(self.deadline))

    def do_handshake(self, *args: Any) -> None:
        self._arm()
        super().do_handshake(*args)

    def read(self, *args: Any) -> Any:
        self._arm()
        return super().read(*args)

    def recv(self, *args: Any) -> bytes:
        self._arm()
        return super().recv(*args)

    def recv_into(self, *args: Any) -> int:
        self._arm()
        return super().recv_into(*args)

    def write(self, *args: Any) -> int:
        self._arm()
        return super().write(*args)

    def send(self, *args: Any) -> int:
        self._arm()
        return super().send(*args)

    def sendall(self, *args: Any) -> None:
        self._arm()
        super().sendall(*args)


def _connect(address: _SocketAddress, deadline: float) -> _DeadlineSocket:
    sock = _DeadlineSocket(address.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.deadline = deadline
    try:
        sock.connect(address.sockaddr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a fixed socket address; the host name only goes in the request."""

    def __init__(self, host: str, port: int, address: _SocketAddress, deadline: float) -> None:
        super().__init__(host, port, timeout=_remaining(deadline))
        self.address = address
        self.deadline = deadline

    def connect(self) -> None:
        self.sock = _connect(self.address, self.deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a fixed socket address, verifying the certificate for the host."""

    def __init__(self, host: str, port: int, address: _SocketAddress, deadline: float) -> None:
        self.tls = ssl.create_default_context()
        self.tls.sslsocket_class = _DeadlineSSLSocket
        super().__init__(host, port, timeout=_remaining(deadline), context=self.tls)
        self.address = address
        self.deadline = deadline

    def connect(self) -> None:
        raw = _connect(self.address, self.deadline)
        try:
            tls = self.tls.wrap_socket(
                raw, server_hostname=self.host, do_handshake_on_connect=False
            )
        except BaseException:
            raw.close()
            raise
        assert isinstance(tls, _DeadlineSSLSocket)
        tls.deadline = self.deadline
        self.sock = tls
        tls.do_handshake()
