"""``python -m benchmarks.kubectl_matrix``: kubectl 1.28 … 1.37 against the sandbox.

For each layer package (pfcompose.testing_kubectl) it runs, against a fresh
in-process sandbox, ``kubectl get`` / ``describe`` of the port-forward targets and
``kubectl port-forward`` to pod/, svc/ and deploy/ once over SPDY
(``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``) and once asking for the WebSocket tunnel
(``=true``), sending bytes through each forward and checking they come back. The
transport kubectl really used is read from the sandbox's request log: a ``POST`` to
``…/portforward`` is SPDY, a ``GET`` is the tunnel; a kubectl that asked for the
tunnel but sent a ``POST`` has no tunnel (``n/a``).

Progress goes to stderr, one line per cell as it is measured, with the reason of
any failure; stdout gets the Markdown table that docs/sandbox.md carries (``--json``:
the cells and reasons instead). Exit status 1 if any cell failed.

    python -m benchmarks.kubectl_matrix            # all ten
    python -m benchmarks.kubectl_matrix 28 37      # some
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import trio

from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.testing import kubectl_port_forward, run_kubectl
from pfcompose.testing_kubectl import (
    LAYER_VERSIONS,
    KubectlFetchError,
    client_version,
    fetch_kubectl,
)

STATE: dict[str, object] = {
    "pods": [{"name": "echo", "labels": {"app": "echo"},
              "ports": [{"containerPort": 5000, "name": "echo", "serve": "echo"}]}],
    "services": [{"name": "echo-svc", "selector": {"app": "echo"},
                  "ports": [{"name": "named", "port": 80, "targetPort": "echo"}]}],
    "deployments": [{"name": "web", "replicas": 1,
                     "template": {"labels": {"app": "web"},
                                  "ports": [{"containerPort": 5000, "serve": "echo"}]}}],
}
TARGETS = {"pod": ("pod/echo", ":5000"), "svc": ("svc/echo-svc", ":80"),
           "deploy": ("deploy/web", ":5000")}
TRANSPORTS = {"spdy": False, "tunnel": True}
GETS = {"get": ("get", "pods,services,deployments"),
        "describe": ("describe", "pod/echo")}


@dataclass
class Row:
    minor: int
    version: str = ""
    cells: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


async def round_trip(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read back to EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.send_all(payload)
                await stream.send_eof()

            nursery.start_soon(send)
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
        return b"".join(chunks)
    finally:
        await stream.aclose()


async def forward_cell(sb: Sandbox, kubectl: Path, target: str, port: str,
                       websockets: bool) -> tuple[str, str]:
    """(ok | fail | n/a, detail) for one port-forward through the sandbox."""
    payload = os.urandom(256 * 1024)
    before = len(sb.api.requests)
    try:
        with trio.fail_after(30):
            async with kubectl_port_forward(sb.kubeconfig_path, target, port,
                                            websockets=websockets, kubectl=kubectl) as fwd:
                got = await round_trip(fwd.local_ports[0], payload)
    except (RuntimeError, OSError, trio.TooSlowError) as e:
        return "fail", (str(e).strip().splitlines() or [type(e).__name__])[-1]
    methods = [m for m, t in sb.api.requests[before:] if t.split("?")[0].endswith("/portforward")]
    if got != payload:
        return "fail", f"{len(got)} of {len(payload)} bytes came back ({methods})"
    used_tunnel = methods[-1:] == ["GET"]
    if websockets and not used_tunnel:
        return "n/a", f"asked for the tunnel, sent {methods} (SPDY)"
    if not websockets and used_tunnel:
        return "fail", f"asked for SPDY, sent {methods}"
    return "ok", f"{len(payload)} bytes round trip over {'tunnel' if used_tunnel else 'SPDY'}"


async def measure(minor: int, kubectl: Path, out: list[str]) -> Row:
    row = Row(minor, client_version(kubectl))
    async with run_sandbox(State.from_dict(STATE)) as sb:
        for name, args in GETS.items():
            r = await run_kubectl(sb.kubeconfig_path, *args, kubectl=kubectl)
            row.cells[name] = "ok" if r.returncode == 0 and not r.stderr.strip() else "fail"
            if row.cells[name] != "ok":
                row.errors[name] = (r.stderr.decode(errors="replace").strip().splitlines()
                                    or [f"exit {r.returncode}"])[-1]
            out.append(f"{row.version} {name}: {row.cells[name]} {row.errors.get(name, '')}")
            print(out[-1], file=sys.stderr, flush=True)
        for tname, (target, port) in TARGETS.items():
            for transport, ws in TRANSPORTS.items():
                key = f"{tname}/{transport}"
                row.cells[key], detail = await forward_cell(sb, kubectl, target, port, ws)
                if row.cells[key] != "ok":
                    row.errors[key] = detail
                out.append(f"{row.version} {key}: {row.cells[key]} ({detail})")
                print(out[-1], file=sys.stderr, flush=True)
    return row


def markdown(rows: list[Row]) -> str:
    cols = list(GETS) + [f"{t}/{x}" for t in TARGETS for x in TRANSPORTS]
    lines = ["| kubectl | " + " | ".join(cols) + " |",
             "|---------|" + "|".join("-" * (len(c) + 2) for c in cols) + "|"]
    for r in rows:
        lines.append(f"| {r.version or f'1.{r.minor} (not fetched)'} | "
                     + " | ".join(r.cells.get(c, "-") for c in cols) + " |")
    return "\n".join(lines)


async def main_async(minors: list[int], as_json: bool) -> int:
    rows: list[Row] = []
    log: list[str] = []
    for minor in minors:
        t0 = time.monotonic()
        try:
            kubectl = await trio.to_thread.run_sync(fetch_kubectl, minor)
        except KubectlFetchError as e:
            print(f"1.{minor}: not measured: {e}", file=sys.stderr, flush=True)
            rows.append(Row(minor, errors={"fetch": str(e)}))
            continue
        print(f"# kubectl 1.{minor}: {kubectl} (fetch/cache {time.monotonic() - t0:.1f} s)",
              file=sys.stderr, flush=True)
        rows.append(await measure(minor, kubectl, log))
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(markdown(rows))
    failed = [r for r in rows if any(v == "fail" for v in r.cells.values()) or "fetch" in r.errors]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.kubectl_matrix",
                                 description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("minors", nargs="*", type=lambda s: int(s.lstrip("v").removeprefix("1.")),
                    help="kubectl minors (default: 28 … 37)")
    ap.add_argument("--json", action="store_true", help="the cells as JSON")
    args = ap.parse_args(argv)
    return trio.run(main_async, args.minors or list(LAYER_VERSIONS), args.json)


if __name__ == "__main__":
    sys.exit(main())
