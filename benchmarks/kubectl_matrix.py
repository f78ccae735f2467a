"""``python -m benchmarks.kubectl_matrix``: kubectl 1.28 … 1.37 against the sandbox.

For each layer package (pfcompose.sandbox.testing_kubectl) it runs, against a fresh
in-process sandbox, ``kubectl get`` / ``describe`` of the port-forward targets,
``kubectl wait`` / ``rollout status`` (what scripts run before a forward) and
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

from pfcompose.sandbox.pytest_plugin import kubectl_port_forward, run_kubectl
from pfcompose.sandbox.server import Sandbox, run_sandbox
from pfcompose.sandbox.state import State
from pfcompose.sandbox.testing_kubectl import (
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
        "describe": ("describe", "pod/echo", "svc/echo-svc", "deploy/web"),
        "wait": ("wait", "--for=condition=Ready", "pod/echo", "--timeout=10s"),
        "rollout": ("rollout", "status", "deploy/web", "--timeout=10s")}
"""kubectl commands around a port-forward; ok = exit 0 and nothing on stderr."""
SCENARIOS = {
    "default": "KUBECTL_PORT_FORWARD_WEBSOCKETS unset: the transport kubectl picks",
    "vs-1.29": "tunnel asked, `--emulate 1.29` server (no tunnel): kubectl falls back to SPDY",
    "vs-1.36": "tunnel asked, `--emulate 1.36` server (WebSocket passed through to the kubelet)",
    "ws-gateway": "default transport behind `--gateway websocket-only` (SPDY refused, 403)",
    "tls+token": "default transport, `--tls --require-client-cert --token`",
    "pod-killed": "pod deleted mid-forward: kubectl exits 1, `error: lost connection to pod`",
    "watch": "svc/ with no pod yet: kubectl watches, forwards once one appears",
}


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


def transport_of(sb: Sandbox, before: int) -> str:
    """The transports of the port-forward requests since ``before``: POST = SPDY, GET = tunnel."""
    methods = [m for m, t in sb.api.requests[before:]
               if t.split("?")[0].endswith("/portforward")]
    return "+".join({"GET": "tunnel", "POST": "spdy"}.get(m, m) for m in methods) or "none"


async def simple_forward(sb: Sandbox, kubectl: Path, target: str, port: str,
                         websockets: bool | None) -> str:
    """Forward, send 64 KiB, check it returns; the transport(s) used, or raise."""
    before = len(sb.api.requests)
    payload = os.urandom(64 * 1024)
    with trio.fail_after(30):
        async with kubectl_port_forward(sb.kubeconfig_path, target, port,
                                        websockets=websockets, kubectl=kubectl) as fwd:
            got = await round_trip(fwd.local_ports[0], payload)
    if got != payload:
        raise RuntimeError(f"{len(got)} of {len(payload)} bytes came back")
    return transport_of(sb, before)


async def scenario(name: str, kubectl: Path, minor: int) -> tuple[str, str]:
    """(cell, detail) of one SCENARIOS entry; the cell names the transport that worked."""
    state = State.from_dict(STATE)
    if name == "default":
        async with run_sandbox(state) as sb:
            used = await simple_forward(sb, kubectl, "pod/echo", ":5000", None)
        return used, f"worked over {used}"
    if name in ("vs-1.29", "vs-1.36"):
        async with run_sandbox(state, emulate=name[3:]) as sb:
            used = await simple_forward(sb, kubectl, "deploy/web", ":5000", True)
        return used, f"worked over {used}"
    if name == "ws-gateway":
        async with run_sandbox(state, gateway="websocket-only") as sb:
            try:
                used = await simple_forward(sb, kubectl, "pod/echo", ":5000", None)
            except RuntimeError as e:
                return "refused", (str(e).strip().splitlines() or ["failed"])[-1]
        return used, f"worked over {used}"
    if name == "tls+token":
        async with run_sandbox(state, tls=True, require_client_cert=True, token="t") as sb:
            used = await simple_forward(sb, kubectl, "svc/echo-svc", ":80", None)
        return used, f"worked over {used}"
    if name == "pod-killed":
        async with run_sandbox(state) as sb:
            with trio.fail_after(30):
                async with kubectl_port_forward(sb.kubeconfig_path, "pod/echo", ":5000",
                                                websockets=None, kubectl=kubectl) as fwd:
                    if await round_trip(fwd.local_ports[0], b"x") != b"x":
                        return "fail", "no echo before the kill"
                    await sb.kill_pod("echo")
                    status, _, err = await fwd.wait_exit()
            last = (err.splitlines() or [""])[-1]
            ok = status == 1 and last == "error: lost connection to pod"
            return ("ok" if ok else "fail"), f"exit {status}: {last}"
    if name == "watch":
        from pfcompose.sandbox.state import Behaviour, ContainerPort, Pod, Service, ServicePort

        async with run_sandbox(state) as sb:
            sb.state.add_service(Service("later", selector={"app": "later"},
                                         ports=[ServicePort(80, 5000)]))

            async def add_pod_once_watched() -> None:
                await sb.api.wait_for_request(lambda _, t: "watch=true" in t)
                await sb.add_pod(Pod("later-1", labels={"app": "later"},
                                     ports=[ContainerPort(5000, serve=Behaviour("echo"))]))

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(add_pod_once_watched)
                    used = await simple_forward(sb, kubectl, "svc/later", ":80", None)
        return "ok", f"worked over {used} after a watch"
    raise ValueError(name)


async def measure(minor: int, kubectl: Path, out: list[str]) -> Row:
    row = Row(minor, client_version(kubectl))
    for name in SCENARIOS:
        try:
            row.cells[name], detail = await scenario(name, kubectl, minor)
        except (RuntimeError, OSError, trio.TooSlowError) as e:
            row.cells[name] = "fail"
            detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        if row.cells[name] == "fail":
            row.errors[name] = detail
        out.append(f"{row.version} {name}: {row.cells[name]} ({detail})")
        print(out[-1], file=sys.stderr, flush=True)
    async with run_sandbox(State.from_dict(STATE)) as sb:
        for name, args in GETS.items():
            t0 = time.monotonic()
            try:
                r = await run_kubectl(sb.kubeconfig_path, *args, kubectl=kubectl)
            except trio.TooSlowError:
                row.cells[name], row.errors[name] = "fail", "did not finish in 30 s"
            else:
                ok = r.returncode == 0 and not r.stderr.strip()
                row.cells[name] = "ok" if ok else "fail"
                if not ok:
                    row.errors[name] = (r.stderr.decode(errors="replace").strip().splitlines()
                                        or [f"exit {r.returncode}"])[-1]
                elif time.monotonic() - t0 > 5:  # a wait that only its --timeout ended
                    row.cells[name], row.errors[name] = "fail", "took over 5 s"
            out.append(f"{row.version} {name}: {row.cells[name]} {row.errors.get(name, '')}")
            print(out[-1], file=sys.stderr, flush=True)
        for tname, (target, port) in TARGETS.items():
            for transport, ws in TRANSPORTS.items():
                key = f"{tname}/{transport}"
                row.cells[key], detail = await forward_cell(sb, kubectl, target, port, ws)
                if row.cells[key] == "fail":
                    row.errors[key] = detail
                out.append(f"{row.version} {key}: {row.cells[key]} ({detail})")
                print(out[-1], file=sys.stderr, flush=True)
    return row


def table(rows: list[Row], cols: list[str]) -> list[str]:
    lines = ["| kubectl | " + " | ".join(cols) + " |",
             "|---------|" + "|".join("-" * (len(c) + 2) for c in cols) + "|"]
    for r in rows:
        lines.append(f"| {r.version or f'1.{r.minor} (not fetched)'} | "
                     + " | ".join(r.cells.get(c, "-") for c in cols) + " |")
    return lines


def markdown(rows: list[Row]) -> str:
    """The two tables docs/sandbox.md carries, and what the scenario columns mean."""
    core = list(GETS) + [f"{t}/{x}" for t in TARGETS for x in TRANSPORTS]
    lines = [*table(rows, core), "", *table(rows, list(SCENARIOS)), ""]
    lines += [f"* `{name}`: {text}" for name, text in SCENARIOS.items()]
    failures = [f"* {r.version or f'1.{r.minor}'} {c}: {e}" for r in rows
                for c, e in r.errors.items()]
    if failures:
        lines += ["", "Failures:", *failures]
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
