"""Sending to tenant URLs: private targets refused, checked address pinned, no redirects."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from webhooks import ssrf

REAL_GETADDRINFO = socket.getaddrinfo
BODY = b'{"id": "evt_1", "type": "ping"}'
HEADERS = {"webhook-id": "evt_1", "content-type": "application/json"}


@dataclass
class Receiver:
    """A real HTTP server on a loopback address, recording what it receives."""

    host: str
    port: int = 0
    received: list[Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    servers = []

    def start(host: str = "127.0.0.1", port: int = 0, ssl_context=None) -> Receiver:
        receiver = Receiver(host)

        @Request.application
        def app(request: Request) -> Response:
            receiver.received.append(request)
            receiver.bodies.append(request.get_data())
            if request.path == "/redirect":
                return Response("", status=302, headers={"Location": f"{receiver.url}/target"})
            if request.path == "/huge":
                chunk = b"x" * 65536
                return Response((chunk for _ in range(2000)), mimetype="text/plain")  # 128 MiB
            return Response("thanks", status=200)

        server = make_server(host, port, app, threaded=True, ssl_context=ssl_context)
        receiver.port = server.server_port
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def resolve_as(monkeypatch, mapping: dict[str, list[list[str]]]) -> dict[str, int]:
    """Make getaddrinfo answer `mapping[host][n]` on the n-th lookup of host (last repeats)."""
    calls: dict[str, int] = {}

    def fake(host, port, *args, **kwargs):
        if host not in mapping:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        answers = mapping[host][min(calls.get(host, 0), len(mapping[host]) - 1)]
        calls[host] = calls.get(host, 0) + 1
        result = []
        for address in answers:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return result

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return calls


def send(url: str, *, allow_private: bool = False, livemode: bool = False, timeout: float = 5):
    return ssrf.post(
        url,
        body=BODY,
        headers=HEADERS,
        timeout=timeout,
        allow_private=allow_private,
        livemode=livemode,
    )


# --- check_url: API-time validation, no DNS --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "https://user:pass@example.com/hook",
        "https://user@example.com/hook",
        "https:///hook",
        "https://example.com:99999/hook",
        "https://example.com/ hook",
        "example.com/hook",
    ],
)
def test_check_url_refuses_unusable_urls(url):
    with pytest.raises(ssrf.UnsafeTarget) as refused:
        ssrf.check_url(url, livemode=False, allow_private=True)
    assert str(refused.value)


def test_check_url_requires_https_in_livemode():
    with pytest.raises(ssrf.UnsafeTarget, match="https"):
        ssrf.check_url("http://example.com/hook", livemode=True, allow_private=False)
    ssrf.check_url("https://example.com/hook", livemode=True, allow_private=False)
    ssrf.check_url("http://example.com/hook", livemode=False, allow_private=False)


def test_check_url_refuses_private_ip_literals_but_does_not_resolve(monkeypatch):
    def no_dns(*args, **kwargs):
        raise AssertionError("check_url must not resolve DNS")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ssrf.UnsafeTarget, match="not a public"):
        ssrf.check_url("https://10.0.0.1/hook", livemode=False, allow_private=False)
    ssrf.check_url("https://10.0.0.1/hook", livemode=False, allow_private=True)
    ssrf.check_url("https://internal.example.com/hook", livemode=False, allow_private=False)


# --- which addresses are public -------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 -- an address under test, not a bind
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2001:db8::1",
    ],
)
def test_non_global_addresses_are_not_public(address):
    import ipaddress

    assert not ssrf.is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_global_addresses_are_public(address):
    import ipaddress

    assert ssrf.is_public_address(ipaddress.ip_address(address))


# --- post: refusals at send time ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://100.64.0.1/",
        "http://localhost:{port}/",
        "http://0.0.0.0:{port}/",
    ],
)
def test_private_targets_are_refused(serve, url):
    receiver = serve()
    with pytest.raises(ssrf.UnsafeTarget):
        send(url.format(port=receiver.port))
    assert receiver.received == []


def test_hostname_resolving_to_a_private_address_is_refused(monkeypatch, serve):
    receiver = serve()
    resolve_as(monkeypatch, {"hooks.tenant.example": [["127.0.0.1"]]})
    with pytest.raises(ssrf.UnsafeTarget, match=r"resolves to 127\.0\.0\.1"):
        send(f"http://hooks.tenant.example:{receiver.port}/")
    assert receiver.received == []


def test_private_address_refusals_name_the_setting_that_allows_them(monkeypatch, serve):
    receiver = serve()
    with pytest.raises(ssrf.UnsafeTarget, match="WEBHOOK_ALLOW_PRIVATE_TARGETS=true"):
        ssrf.check_url(receiver.url, livemode=False, allow_private=False)
    resolve_as(monkeypatch, {"laptop.test": [["127.0.0.1"]]})
    with pytest.raises(ssrf.UnsafeTarget, match="WEBHOOK_ALLOW_PRIVATE_TARGETS=true"):
        send(f"http://laptop.test:{receiver.port}/")
    assert receiver.received == []


def test_one_private_answer_among_public_ones_refuses_the_host(monkeypatch):
    resolve_as(monkeypatch, {"mixed.example": [["93.184.215.14", "10.1.2.3"]]})
    with pytest.raises(ssrf.UnsafeTarget, match=r"10\.1\.2\.3"):
        send("http://mixed.example/")


def test_unresolvable_host_is_a_connection_error(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(requests.ConnectionError):
        send("http://no-such-host.example/")


def test_http_is_refused_in_livemode_at_send_time(serve):
    receiver = serve()
    with pytest.raises(ssrf.UnsafeTarget, match="https"):
        send(receiver.url, allow_private=True, livemode=True)
    assert receiver.received == []


# --- post: sending when allowed -------------------------------------------------------------


def test_allowed_private_target_receives_the_post(serve):
    receiver = serve()
    response = send(f"{receiver.url}/hook?x=1", allow_private=True)

    assert response.status_code == 200
    assert response.content == b"thanks"
    [request] = receiver.received
    assert request.method == "POST"
    assert request.full_path == "/hook?x=1"
    assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["webhook-id"] == "evt_1"
    assert request.headers["content-type"] == "application/json"
    assert receiver.bodies == [BODY]


def test_ipv6_loopback_target_when_allowed(serve):
    try:
        receiver = serve("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    response = send(f"{receiver.url}/hook", allow_private=True)
    assert response.status_code == 200
    assert receiver.received[0].headers["Host"] == f"[::1]:{receiver.port}"


def test_redirect_is_returned_not_followed(serve):
    receiver = serve()
    response = send(f"{receiver.url}/redirect", allow_private=True)

    assert response.status_code == 302
    assert response.headers["Location"].endswith("/target")
    assert [request.path for request in receiver.received] == ["/redirect"]


def test_hanging_receiver_times_out():
    # Accepts connections (the kernel's backlog does) but never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            send(f"http://127.0.0.1:{port}/", allow_private=True, timeout=0.3)
        assert time.monotonic() - started < 3
    finally:
        listener.close()


def test_huge_response_body_is_not_downloaded(serve):
    receiver = serve()
    started = time.monotonic()
    response = send(f"{receiver.url}/huge", allow_private=True)

    assert response.status_code == 200
    assert len(response.content) == ssrf.MAX_RESPONSE_BYTES
    assert response.text.startswith("xxxx")
    assert time.monotonic() - started < 3


# --- post: the checked address is the one connected to (DNS rebinding) ---------------------


def test_connects_to_the_checked_address_not_a_second_answer(monkeypatch, serve):
    # Two real servers on the same port, one per address: only the one answering the first
    # (checked) lookup may see the request.
    checked = serve("127.0.0.1")
    rebound = serve("127.0.0.2", port=checked.port)
    calls = resolve_as(monkeypatch, {"rebind.example": [["127.0.0.1"], ["127.0.0.2"]]})

    response = send(f"http://rebind.example:{checked.port}/hook", allow_private=True)

    assert response.status_code == 200
    assert calls["rebind.example"] == 1
    assert len(checked.received) == 1
    assert checked.received[0].headers["Host"] == f"rebind.example:{checked.port}"
    assert rebound.received == []


def test_dns_rebinding_to_loopback_never_reaches_it(monkeypatch, serve):
    local = serve("127.0.0.1")
    calls = resolve_as(monkeypatch, {"rebind.example": [["93.184.215.14"], ["127.0.0.1"]]})
    connected_to = []

    def fake_create_connection(address, *args, **kwargs):
        connected_to.append(address[0])
        raise ConnectionRefusedError("test: no outside network")

    monkeypatch.setattr("urllib3.util.connection.create_connection", fake_create_connection)

    with pytest.raises(requests.ConnectionError):
        send(f"http://rebind.example:{local.port}/hook")

    assert calls["rebind.example"] == 1
    assert connected_to == ["93.184.215.14"]
    assert local.received == []


# --- https: pinned IP, yet SNI and the certificate are checked against the hostname ---------


def _issue(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for `name` signed by it: (ca, cert, key) files."""
    now = dt.datetime.now(dt.UTC)

    def build(subject, issuer, public_key, signer, *, ca: bool, san: str | None = None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("Test CA", "Test CA", ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(name, "Test CA", key.public_key(), ca_key, ca=False, san=name)

    pem = serialization.Encoding.PEM
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    cert_path.write_bytes(cert.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


def _tls_receiver(tmp_path, monkeypatch, serve, cert_name: str) -> Receiver:
    ca, cert, key = _issue(tmp_path, cert_name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen_sni = []
    context.sni_callback = lambda sock, server_name, ctx: seen_sni.append(server_name)
    # requests verifies against its default CA bundle; trust only the test CA.
    monkeypatch.setattr("requests.adapters.DEFAULT_CA_BUNDLE_PATH", str(ca))
    receiver = serve("127.0.0.1", ssl_context=context)
    receiver.seen_sni = seen_sni  # type: ignore[attr-defined]
    return receiver


def test_https_to_pinned_address_verifies_certificate_for_hostname(tmp_path, monkeypatch, serve):
    receiver = _tls_receiver(tmp_path, monkeypatch, serve, "hooks.tenant.example")
    resolve_as(monkeypatch, {"hooks.tenant.example": [["127.0.0.1"]]})

    response = send(
        f"https://hooks.tenant.example:{receiver.port}/hook", allow_private=True, livemode=True
    )

    assert response.status_code == 200
    assert receiver.seen_sni == ["hooks.tenant.example"]  # type: ignore[attr-defined]
    assert receiver.received[0].headers["Host"] == f"hooks.tenant.example:{receiver.port}"


def test_https_certificate_for_another_name_is_rejected(tmp_path, monkeypatch, serve):
    receiver = _tls_receiver(tmp_path, monkeypatch, serve, "someone-else.example")
    resolve_as(monkeypatch, {"hooks.tenant.example": [["127.0.0.1"]]})

    with pytest.raises(requests.exceptions.SSLError):
        send(
            f"https://hooks.tenant.example:{receiver.port}/hook", allow_private=True, livemode=True
        )
    assert receiver.received == []
