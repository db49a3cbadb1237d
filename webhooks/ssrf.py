"""Outbound requests to tenant URLs without server-side request forgery.

`check_url` validates a URL when an endpoint is saved (no DNS: the answer may change by the
time we send). `post` is the only way webhook delivery talks to a tenant URL: it resolves the
host once, refuses if any answer is not globally routable, connects to the address it checked
(no second lookup, so DNS rebinding cannot swap it), follows no redirect and reads at most
MAX_RESPONSE_BYTES of the answer.

Why not a library: `requests-hardened` pins the IP the same way but only checks the first DNS
answer and can only allow loopback (not the private networks a development setup uses);
`advocate` is unmaintained since 2020. The pinning below is the same small adapter technique.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

# The caller records the first 500 bytes of an answer; a little more is read, never the rest.
MAX_RESPONSE_BYTES = 4096

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# Appended to every private-address refusal: a developer pointing an endpoint at a receiver
# on their laptop must learn which setting allows it, not only that it was refused.
PRIVATE_TARGETS_SETTING = (
    "Private and loopback addresses are allowed only where the server sets "
    "WEBHOOK_ALLOW_PRIVATE_TARGETS=true (development only; `lango up` sets it)."
)


class UnsafeTarget(Exception):
    """The URL may not be requested; the message says why, in words fit for the tenant."""


def check_url(url: str, *, livemode: bool, allow_private: bool) -> None:
    """Refuse a URL that can never be a webhook target. Does not resolve DNS.

    Raises UnsafeTarget for a scheme other than http/https, http in live mode, credentials in
    the URL, a missing host or bad port, or a literal IP address that is not globally
    routable (unless allow_private). Hostnames are checked when sending, by `post`.
    """
    parts = _split(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("The URL must start with https:// (or http:// in test mode).")
    if livemode and parts.scheme != "https":
        raise UnsafeTarget("Live mode endpoints must use https://.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("The URL must not contain a user name or password.")
    if not parts.hostname:
        raise UnsafeTarget("The URL has no host.")
    try:
        parts.port  # noqa: B018 -- parsing the port raises ValueError when it is invalid
    except ValueError:
        raise UnsafeTarget("The URL's port is not valid.") from None
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not allow_private and not is_public_address(literal):
        raise UnsafeTarget(
            f"The address {literal} is not a public internet address. {PRIVATE_TARGETS_SETTING}"
        )


def is_public_address(address: IPAddress) -> bool:
    """Whether `address` is globally routable, judging IPv4 embedded in IPv6 by the IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
    # is_global alone misses multicast (and, on some Python versions, a few special ranges),
    # so every property is asked.
    return not (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
        or address in _CGNAT
    )


def post(
    url: str,
    *,
    body: bytes,
    headers: dict,
    timeout: float,
    allow_private: bool,
    livemode: bool,
) -> requests.Response:
    """POST `body` to `url` safely; return the response, whatever its status (3xx included).

    The response's `.content` holds at most MAX_RESPONSE_BYTES. Raises UnsafeTarget if the URL
    or any address its host resolves to is refused, requests.ConnectionError if the host does
    not resolve or cannot be reached, requests.Timeout if connecting or any read takes longer
    than `timeout` seconds.
    """
    check_url(url, livemode=livemode, allow_private=allow_private)
    parts = _split(url)
    address = _resolve_checked(parts, allow_private=allow_private)

    session = requests.Session()
    # Environment proxies would resolve the host again on their side: never use them.
    session.trust_env = False
    adapter = _PinnedAdapter(hostname=parts.hostname or "", address=address)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    with session:
        response = session.post(
            url,
            data=body,
            headers=headers,
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
        )
        try:
            content = response.raw.read(MAX_RESPONSE_BYTES, decode_content=True)
        except Exception as error:  # a broken body is still an answer with a status
            content = f"<response body unreadable: {error}>".encode()
        finally:
            response.close()
    # Hand back an ordinary, fully "consumed" Response holding only what was read.
    response._content = content
    response._content_consumed = True
    return response


def _split(url: str) -> SplitResult:
    if any(char.isspace() or ord(char) < 0x20 for char in url):
        raise UnsafeTarget("The URL must not contain spaces or control characters.")
    try:
        return urlsplit(url)
    except ValueError:
        raise UnsafeTarget("The URL is not valid.") from None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _resolve_checked(parts: SplitResult, *, allow_private: bool) -> IPAddress:
    """Every address the host resolves to, checked; the first one is the one to connect to."""
    hostname = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        answers = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise requests.ConnectionError(f"Could not resolve {hostname}: {error}") from None
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # Drop an IPv6 scope ("fe80::1%eth0"); link-local is refused anyway.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not allow_private and not is_public_address(address):
            # One bad answer refuses the host: a later connection could be given that one.
            raise UnsafeTarget(
                f"{hostname} resolves to {address}, not a public internet address. "
                + PRIVATE_TARGETS_SETTING
            )
        addresses.append(address)
    if not addresses:
        raise requests.ConnectionError(f"Could not resolve {hostname}: no IP address")
    return addresses[0]


class _PinnedAdapter(HTTPAdapter):
    """Connects to one pre-checked address while speaking to the URL's hostname.

    The TCP connection goes to `address`; the Host header, TLS SNI and certificate check use
    the hostname, so https still verifies the tenant's certificate. Only this hostname can go
    through the adapter (redirects are off, so nothing else should try).
    """

    def __init__(self, *, hostname: str, address: IPAddress) -> None:
        super().__init__(max_retries=0)
        self._hostname = hostname.lower().rstrip(".")
        self._address = address

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        hostname = str(host_params["host"]).strip("[]")
        if hostname.lower().rstrip(".") != self._hostname:
            # requests IDNA-encodes non-ASCII hostnames; compare on the same encoding.
            try:
                expected = self._hostname.encode("idna").decode("ascii")
            except UnicodeError:
                expected = self._hostname
            if hostname.lower().rstrip(".") != expected:
                raise UnsafeTarget(f"{hostname} was not checked before connecting.")
        request.headers = CaseInsensitiveDict(request.headers or {})
        request.headers["Host"] = urlsplit(request.url).netloc
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname
            pool_kwargs["assert_hostname"] = hostname
        host_params["host"] = str(self._address)
        return host_params, pool_kwargs
