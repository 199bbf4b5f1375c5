"""Fetch an image from a URL that a stranger typed, without letting it reach inside.

A server that downloads whatever URL a page sends it is a proxy into the network it
sits in (server-side request forgery): ``http://169.254.169.254/`` is a cloud
machine's metadata service, ``http://127.0.0.1:6379/`` a database that trusts its own
host. ``fetch_url`` therefore:

- accepts only ``http`` and ``https`` URLs, without credentials;
- resolves the host name once, refuses it if any of its addresses is loopback,
  private, link-local, multicast, reserved or otherwise not public (IPv4 addresses
  embedded in IPv6 ones included), unless an allow-list names it;
- connects to the address it checked, not to the name again, so a DNS answer that
  changes between the check and the connection (DNS rebinding) cannot slip through;
  the request still carries the host name (``Host`` header, TLS server name and
  certificate check);
- follows redirects itself, at most ``max_redirects``, checking every hop the same way;
- gives up after ``timeout`` seconds in all (connecting and every read, not each one),
  and after ``max_bytes`` bytes, before reading them when the response announces them.

Only the standard library is used: ``http.client`` reads no proxy settings from the
environment and follows no redirects on its own, which is what is wanted here.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from imgrec.core.errors import ImgrecError

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_MAX_REDIRECTS = 5
MAX_URL_LENGTH = 2048

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

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
    """Whether ``address`` is a public unicast address that a fetch may connect to.

    IPv4 addresses carried inside IPv6 ones (``::ffff:127.0.0.1``, 6to4, Teredo,
    NAT64) must be public too: the connection may end up at them.

    Args:
        address: an IPv4 or IPv6 address, as text or an ``ipaddress`` object.

    Returns:
        False for loopback, private, link-local, shared (carrier NAT), multicast,
        reserved, unspecified and documentation addresses; True otherwise.

    Raises:
        ValueError: ``address`` is not an IP address.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if not ip.is_global or ip.is_multicast:
        return False
    return all(is_public_address(inner) for inner in _embedded_ipv4(ip))


def _embedded_ipv4(ip: Address) -> list[ipaddress.IPv4Address]:
    if ip.version == 4:
        return []
    inner = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64:
        inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
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
        return any(address in network for network in self.networks)


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
        timeout: seconds for the whole fetch, redirects included (name resolution
            is the system's and is not bounded by it).
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
        address = _checked_address(target, allowed)
        try:
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


def _checked_address(target: _Target, allowed: AllowList) -> str:
    """Resolve the target's host once; every address must be allowed; return the first."""
    try:
        infos = socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as err:
        raise ForbiddenHostError(f"{target.url}: cannot resolve {target.host!r} ({err})") from err
    addresses = []
    for *_, sockaddr in infos:
        text = str(sockaddr[0])
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not allowed.permits(target.host, address):
            raise ForbiddenHostError(
                f"{target.url}: refused, {target.host} is {address}, which is not a public "
                "address (loopback, private, link-local or reserved)"
            )
        addresses.append(text)
    if not addresses:
        raise ForbiddenHostError(f"{target.url}: {target.host!r} resolves to no address")
    return addresses[0]


def _get(target: _Target, address: str, deadline: float, max_bytes: int) -> bytes | str:
    """GET the target at ``address``: the body, or the ``Location`` of a redirect."""
    connection_type = _PinnedHTTPSConnection if target.https else _PinnedHTTPConnection
    connection = connection_type(target.host, target.port, address, _remaining(deadline))
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
        while chunk := _read(connection, response, deadline):
            body += chunk
            if len(body) > max_bytes:
                raise ResponseTooLargeError(
                    f"{target.url}: the response is longer than the limit of {max_bytes:,} bytes"
                )
        return bytes(body)
    finally:
        connection.close()


def _read(
    connection: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float
) -> bytes:
    # Each read may wait for the socket's timeout: shrink it to what is left of the
    # whole fetch, so a server sending a byte a second cannot hold a worker forever.
    if connection.sock is not None:
        connection.sock.settimeout(_remaining(deadline))
    return response.read1(_CHUNK)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch's time is up")
    return left


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a fixed address; the host name only goes in the request."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a fixed address, verifying the certificate for the host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)
