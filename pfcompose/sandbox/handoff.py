"""A 1.36+ API server that hands port-forward WebSockets to the kubelet (issue 12 §2).

Up to 1.35 the API server itself answers the SPDY-in-WebSocket tunnel and speaks
SPDY to the kubelet; from 1.36 (kubelets that stream WebSockets natively) it
proxies the WebSocket upgrade straight through to the kubelet, which answers the
handshake. :class:`KubeletHandoff` plays that: the API server re-sends the upgrade
request (path rewritten to the kubelet's ``/portForward/NS/POD``) over a real TCP
connection to a separate kubelet listener and splices bytes both ways; the
kubelet listener answers the handshake and serves the session. ``handoffs`` counts
the WebSockets that took that path, so a test can see they did.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import h11
import trio

from pfcompose.sandbox.apiserver import ApiServer, Request
from pfcompose.sandbox.proxy import splice
from pfcompose.sandbox.state import Pod
from pfcompose.wire.sockio import tune_socket

if TYPE_CHECKING:
    from pfcompose.sandbox.server import Sandbox

__all__ = ["KubeletHandoff"]

_KUBELET_PATH = re.compile(r"^/portForward/(?P<ns>[^/]+)/(?P<name>[^/?]+)")


class KubeletHandoff:
    """The kubelet's own listener, and the API server's pass-through to it."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.port = 0
        self.handoffs = 0
        """WebSocket upgrades the API server passed to the kubelet listener."""
        self.served = 0
        """Upgrades the kubelet listener answered itself."""

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = int(listeners[0].socket.getsockname()[1])
        nursery.start_soon(trio.serve_listeners, self._kubelet_connection, listeners)

    async def forward(
        self, request: Request, transport: trio.abc.Stream, trailing: bytes, pod: Pod
    ) -> None:
        """API server side: pass the upgrade through to the kubelet, byte for byte after."""
        req = request.h11_request
        query = req.target.split(b"?", 1)[1] if b"?" in req.target else b""
        target = f"/portForward/{pod.namespace}/{pod.name}".encode()
        if query:
            target += b"?" + query
        head = req.method + b" " + target + b" HTTP/1.1\r\n"
        head += b"".join(k + b": " + v + b"\r\n" for k, v in req.headers) + b"\r\n"
        kubelet = await trio.open_tcp_stream("127.0.0.1", self.port)
        tune_socket(kubelet)
        self.handoffs += 1
        try:
            await kubelet.send_all(head + trailing)
            await splice(transport, kubelet)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(kubelet)
            await trio.aclose_forcefully(transport)

    async def _kubelet_connection(self, stream: trio.SocketStream) -> None:
        """Kubelet side: read the passed-through request, answer it, serve the session."""
        tune_socket(stream)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            request = await ApiServer(self.sandbox, "")._read_request(conn, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            await trio.aclose_forcefully(stream)
            return
        m = _KUBELET_PATH.match(request.path) if request is not None else None
        pod = self.sandbox.state.pods.get((m["ns"], m["name"])) if m else None
        if request is None or pod is None:
            await trio.aclose_forcefully(stream)
            return
        self.served += 1
        trailing, _ = conn.trailing_data
        await self.sandbox.kubelet.serve(request, stream, bytes(trailing), pod)
