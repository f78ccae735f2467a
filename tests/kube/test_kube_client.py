"""KubeClient against a tiny in-test h11 server: requests, Status errors, watch, TLS."""

from __future__ import annotations

import base64
import json
import ssl
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme
import yaml
from kube_http_server import Reply, SeenRequest, serve_http, server_ssl_context

from pfcompose.config.ports import PortMap
from pfcompose.config.target import ServiceTarget
from pfcompose.kube import (
    ClusterAccess,
    KubeApiError,
    KubeClient,
    KubeConnectionError,
    ResolvedTarget,
    load_access,
    resolve,
)
from pfcompose.kube import client as client_module
from pfcompose.wire.endpoint import Endpoint

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1"}}


def status(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


def plain(port: int, **kw: object) -> Endpoint:
    return Endpoint("127.0.0.1", port, **kw)  # type: ignore[arg-type]


async def test_get_sends_headers_and_decodes_json() -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.json(200, json.dumps(POD).encode())

    async with serve_http(handler) as server:
        endpoint = plain(server.port, headers=(("Authorization", "Bearer tok"),))
        client = KubeClient(endpoint)
        obj = await client.get(
            "/api/v1/namespaces/default/pods", {"labelSelector": "app=web,tier in (a,b)"}
        )
    assert obj == POD
    [req] = server.requests
    assert req.method == "GET"
    assert req.target == (
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29"
    )
    assert req.headers["host"] == f"127.0.0.1:{server.port}"
    assert req.headers["accept"] == "application/json"
    assert req.headers["user-agent"] == "pfcompose"
    assert req.headers["authorization"] == "Bearer tok"


async def test_path_prefix_from_cluster_access() -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.json(200, b"{}")

    async with serve_http(handler) as server:
        access = ClusterAccess("ctx", None, plain(server.port), path_prefix="/k8s/clusters/c-1")
        assert await KubeClient(access).get("/api/v1/namespaces/x/pods/y") == {}
    assert server.requests[0].target == "/k8s/clusters/c-1/api/v1/namespaces/x/pods/y"


@pytest.mark.parametrize(
    ("code", "body", "reason", "message"),
    [
        (404, status(404, "NotFound", 'pods "x" not found'), "NotFound", 'pods "x" not found'),
        (
            403,
            status(403, "Forbidden", 'pods "x" is forbidden: User "bob" cannot get resource'),
            "Forbidden",
            'pods "x" is forbidden: User "bob" cannot get resource',
        ),
        (
            500,
            b"oops\n   the backend\tis down\n",
            "Internal Server Error",
            "oops the backend is down",
        ),
        (502, b"", "Bad Gateway", "the server responded with 502 Bad Gateway"),
    ],
)
async def test_error_status_decoding(code: int, body: bytes, reason: str, message: str) -> None:
    phrases = {404: b"Not Found", 403: b"Forbidden", 500: b"Internal Server Error", 502: b""}

    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply._send(
            __import__("h11").Response(
                status_code=code,
                reason=phrases[code] or b"Bad Gateway",
                headers=[("Content-Length", str(len(body)))],
            )
        )
        await reply.data(body)
        await reply.end()

    async with serve_http(handler) as server:
        with pytest.raises(KubeApiError) as info:
            await KubeClient(plain(server.port)).get("/api/v1/namespaces/d/pods/x")
    assert (info.value.status, info.value.reason, str(info.value)) == (code, reason, message)
    assert info.value.message == message
    assert info.value.retryable is (code >= 500)


async def test_invalid_json_body() -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.json(200, b"<html>")

    async with serve_http(handler) as server:
        with pytest.raises(KubeConnectionError) as info:
            await KubeClient(plain(server.port)).get("/api")
    assert str(info.value) == "GET /api: the server sent invalid JSON"


async def test_connection_refused() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(KubeConnectionError) as info:
        await KubeClient(plain(port)).get("/api")
    assert str(info.value) == f"cannot reach http://127.0.0.1:{port}: connection refused"
    assert info.value.retryable


async def test_server_closes_without_answer() -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        return  # the server closes the connection

    async with serve_http(handler) as server:
        with pytest.raises(KubeConnectionError) as info:
            await KubeClient(plain(server.port)).get("/api")
    assert (
        str(info.value) == f"http://127.0.0.1:{server.port} closed the connection without answering"
    )


async def test_get_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        await trio.sleep_forever()

    async with serve_http(handler) as server:
        with pytest.raises(KubeConnectionError) as info:
            await KubeClient(plain(server.port), timeout=5).get("/api/v1/pods")
    assert (
        str(info.value)
        == f"GET /api/v1/pods: no answer from http://127.0.0.1:{server.port} within 5s"
    )


async def test_server_closes_mid_response() -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.start(200, [("Content-Length", "100")])
        await reply.data(b'{"kind":')  # then the server closes the connection

    async with serve_http(handler) as server:
        with pytest.raises(KubeConnectionError) as info:
            await KubeClient(plain(server.port)).get("/api")
    assert str(info.value) == f"http://127.0.0.1:{server.port} closed the connection mid-response"


async def test_body_larger_than_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_BODY", 10)

    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.json(200, b'{"kind": "APIVersions"}')

    async with serve_http(handler) as server:
        with pytest.raises(KubeConnectionError) as info:
            await KubeClient(plain(server.port)).get("/api")
    assert str(info.value) == f"response from http://127.0.0.1:{server.port} is too large"


# --- watch ------------------------------------------------------------------------------


async def test_watch_event_larger_than_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_WATCH_LINE", 100)

    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.start(200)
        await reply.data(event("ADDED", "a"))
        await reply.data(b'{"type":"ADDED","object":{"metadata":{"name":"' + b"x" * 100)
        await reply.end()

    async with serve_http(handler) as server:
        names = []
        with pytest.raises(KubeConnectionError) as info:
            async with aclosing(KubeClient(plain(server.port)).watch("/api/v1/pods")) as events:
                async for ev in events:
                    names.append(ev["object"]["metadata"]["name"])
    assert names == ["a"]
    assert str(info.value) == "WATCH /api/v1/pods: event larger than 100 bytes"


def event(kind: str, name: str) -> bytes:
    obj = {"type": kind, "object": {"kind": "Pod", "metadata": {"name": name}}}
    return json.dumps(obj).encode() + b"\n"


async def test_watch_streams_chunked_json_lines() -> None:
    go_on = trio.Event()

    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.start(200, [("Content-Type", "application/json")])  # chunked
        first = event("ADDED", "a")
        await reply.data(first[:10])  # a line split across chunks
        await reply.data(first[10:] + event("MODIFIED", "a")[:5])
        await go_on.wait()  # the client must see events before the rest arrives
        await reply.data(event("MODIFIED", "a")[5:] + event("DELETED", "a").rstrip(b"\n"))
        await reply.end()

    seen: list[tuple[str, str]] = []
    async with serve_http(handler) as server:
        client = KubeClient(plain(server.port))
        query = {"labelSelector": "app=web", "resourceVersion": "10"}
        async with aclosing(client.watch("/api/v1/namespaces/d/pods", query)) as events:
            async for ev in events:
                seen.append((ev["type"], ev["object"]["metadata"]["name"]))
                go_on.set()
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert server.requests[0].target == (
        "/api/v1/namespaces/d/pods?labelSelector=app%3Dweb&resourceVersion=10&watch=true"
    )


async def test_watch_error_event_raises() -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.start(200)
        gone = status(410, "Expired", "too old resource version: 5 (10)")
        await reply.data(event("ADDED", "a") + b'{"type":"ERROR","object":' + gone + b"}\n")
        await reply.end()

    async with serve_http(handler) as server:
        names = []
        with pytest.raises(KubeApiError) as info:
            async with aclosing(KubeClient(plain(server.port)).watch("/api/v1/pods")) as events:
                async for ev in events:
                    names.append(ev["object"]["metadata"]["name"])
    assert names == ["a"]
    assert (info.value.status, info.value.reason) == (410, "Expired")
    assert str(info.value) == "too old resource version: 5 (10)"


async def test_watch_http_error() -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.json(403, status(403, "Forbidden", "pods is forbidden: cannot watch"))

    async with serve_http(handler) as server:
        with pytest.raises(KubeApiError) as info:
            async with aclosing(KubeClient(plain(server.port)).watch("/api/v1/pods")) as events:
                async for _ in events:
                    pass
    assert str(info.value) == "pods is forbidden: cannot watch"


async def test_watch_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(req: SeenRequest, reply: Reply) -> None:
        await reply.start(200)
        await reply.data(event("ADDED", "a"))
        await trio.sleep_forever()

    async with serve_http(handler) as server:
        with pytest.raises(KubeConnectionError) as info:
            client = KubeClient(plain(server.port))
            async with aclosing(client.watch("/w", idle_timeout=60)) as events:
                async for _ in events:
                    pass
    assert str(info.value) == f"WATCH /w: http://127.0.0.1:{server.port} sent nothing for 60s"


# --- TLS ---------------------------------------------------------------------------------


def tls_kubeconfig(
    tmp_path: Path, port: int, ca: trustme.CA, client: trustme.LeafCert | None, **cluster: object
) -> str:
    user: dict[str, object] = {"token": "tok"}
    if client is not None:
        user["client-certificate-data"] = base64.b64encode(
            client.cert_chain_pems[0].bytes()
        ).decode()
        user["client-key-data"] = base64.b64encode(client.private_key_pem.bytes()).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "tls",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": base64.b64encode(ca.cert_pem.bytes()).decode(),
                    **cluster,
                },
            }
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "tls", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


async def ok(req: SeenRequest, reply: Reply) -> None:
    await reply.json(200, b'{"kind":"APIVersions"}')


async def test_tls_with_ca_client_cert_and_token(
    tmp_path: Path, ca: trustme.CA, server_cert: trustme.LeafCert, client_cert: trustme.LeafCert
) -> None:
    ctx = server_ssl_context(ca, server_cert, require_client_cert=True)
    async with serve_http(ok, ctx) as server:
        access = await load_access(tls_kubeconfig(tmp_path, server.port, ca, client_cert), None)
        assert await KubeClient(access).get("/api") == {"kind": "APIVersions"}
    [req] = server.requests
    assert req.headers["authorization"] == "Bearer tok"
    assert req.peer_cert is not None
    assert tuple(rdn for rdn in req.peer_cert["subject"] if rdn[0][0] == "commonName") == (
        (("commonName", "alice"),),
    )


async def test_tls_server_name(
    tmp_path: Path, ca: trustme.CA, client_cert: trustme.LeafCert
) -> None:
    only_kubernetes = ca.issue_cert("kubernetes")
    ctx = server_ssl_context(ca, only_kubernetes)
    async with serve_http(ok, ctx) as server:
        path = tls_kubeconfig(tmp_path, server.port, ca, None)
        with pytest.raises(KubeConnectionError) as info:
            await KubeClient(await load_access(path, None)).get("/api")
        assert str(info.value) == (
            f"TLS handshake with https://127.0.0.1:{server.port} failed: certificate verify "
            "failed: IP address mismatch, certificate is not valid for '127.0.0.1'."
        )
        path = tls_kubeconfig(tmp_path, server.port, ca, None, **{"tls-server-name": "kubernetes"})
        assert await KubeClient(await load_access(path, None)).get("/api") == {
            "kind": "APIVersions"
        }


async def test_tls_unknown_ca_and_insecure(tmp_path: Path, server_cert: trustme.LeafCert) -> None:
    other_ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    async with serve_http(ok, ctx) as server:
        path = tls_kubeconfig(tmp_path, server.port, other_ca, None)
        with pytest.raises(KubeConnectionError) as info:
            await KubeClient(await load_access(path, None)).get("/api")
        assert str(info.value).startswith(
            f"TLS handshake with https://127.0.0.1:{server.port} failed: certificate verify failed:"
        )
        cfg = yaml.safe_load(Path(path).read_text())
        del cfg["clusters"][0]["cluster"]["certificate-authority-data"]
        cfg["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = True
        Path(path).write_text(yaml.safe_dump(cfg))
        assert await KubeClient(await load_access(path, None)).get("/api") == {
            "kind": "APIVersions"
        }


async def test_tls_client_cert_required_but_missing(
    tmp_path: Path, ca: trustme.CA, server_cert: trustme.LeafCert
) -> None:
    ctx = server_ssl_context(ca, server_cert, require_client_cert=True)
    async with serve_http(ok, ctx) as server:
        access = await load_access(tls_kubeconfig(tmp_path, server.port, ca, None), None)
        with pytest.raises(KubeConnectionError) as info:
            await KubeClient(access).get("/api")
    # TLS 1.3: the server's refusal arrives after the client's handshake completed, as an
    # alert or (our test server) a bare close
    url = f"https://127.0.0.1:{server.port}"
    assert str(info.value) in (
        f"{url} closed the connection without answering",
        f"connection to {url} lost: tlsv13 alert certificate required",
    )
    assert server.requests == []


async def test_resolve_through_the_client() -> None:
    """One service resolution over real HTTP: the paths and query kubectl would send."""
    objects = {
        "/api/v1/namespaces/team/services/web": {
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
        "/api/v1/namespaces/team/pods?labelSelector=app%3Dweb": {
            "kind": "PodList",
            "items": [
                {
                    "metadata": {"name": "web-7", "creationTimestamp": "2024-01-01T00:00:00Z"},
                    "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
                    "status": {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            ],
        },
    }

    async def handler(req: SeenRequest, reply: Reply) -> None:
        if req.target in objects:
            await reply.json(200, json.dumps(objects[req.target]).encode())
        else:
            await reply.json(404, status(404, "NotFound", "no such thing"))

    @dataclass(frozen=True)
    class Spec:
        to: ServiceTarget
        ports: tuple[PortMap, ...]

    async with serve_http(handler) as server:
        client = KubeClient(plain(server.port))
        spec = Spec(ServiceTarget("web"), (PortMap(0, 80),))
        assert await resolve(client, spec, "team") == ResolvedTarget("web-7", "team", ((0, 8080),))
    assert [r.target for r in server.requests] == list(objects)
