"""``pfcompose sandbox``: run the emulated cluster until Ctrl-C.

Prints where it listens and where the kubeconfig is, flushed at once, so a script
(or ``pfcompose.sandbox.pytest_plugin``) can wait for those lines instead of sleeping.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
import trio

from pfcompose.exitcodes import ExitCode
from pfcompose.sandbox.state import State, StateError
from pfcompose.up.resources import keep_freed_buffers

__all__ = ["sandbox"]

_PATH = click.Path(path_type=Path)


@click.command("sandbox")
@click.option(
    "--state",
    "state_file",
    type=_PATH,
    default=None,
    metavar="FILE",
    help="Objects of the emulated cluster (YAML; see docs/sandbox.md).",
)
@click.option(
    "--from",
    "from_file",
    type=_PATH,
    default=None,
    metavar="FILE",
    help="Synthesise objects that satisfy every forward of this forwards.yaml.",
)
@click.option(
    "--listen",
    default="127.0.0.1:0",
    metavar="HOST:PORT",
    show_default=True,
    help="Address of the API server (port 0: a free port).",
)
@click.option(
    "--kubeconfig-out",
    type=_PATH,
    default=None,
    metavar="PATH",
    help="Where to write the kubeconfig (default: a temporary file, removed at exit).",
)
@click.option("--tls", is_flag=True, help="Serve HTTPS with a CA generated at start.")
@click.option(
    "--require-client-cert",
    is_flag=True,
    help="With --tls: require the client certificate written to the kubeconfig.",
)
@click.option(
    "--token",
    default=None,
    metavar="TOKEN",
    help="Require 'Authorization: Bearer TOKEN' (written to the kubeconfig).",
)
@click.option(
    "--token-ttl",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Require short-lived tokens the sandbox mints; the kubeconfig's user is "
    "the sandbox's exec plugin (pfcompose/sandbox/execplugin.py) fetching them.",
)
@click.option(
    "--proxy",
    type=click.Choice(["http", "https", "socks5"]),
    default=None,
    help="Also run a proxy in front of the API server; the kubeconfig's "
    "proxy-url points at it (https implies --tls).",
)
@click.option(
    "--proxy-auth",
    default=None,
    metavar="USER:PASSWORD",
    help="With --proxy: require these proxy credentials (put in the proxy-url).",
)
@click.option(
    "--gateway",
    default=None,
    metavar="websocket-only|idle=SECONDS",
    help="Put a gateway in front of the API server (the kubeconfig's server): "
    "one that refuses SPDY upgrades, or one that cuts idle connections.",
)
@click.option(
    "--emulate",
    type=click.Choice(["1.29", "1.35", "1.36"]),
    default=None,
    help="Play an older (1.29: no WebSocket tunnel) or newer (1.36: WebSocket "
    "passed through to the kubelet) API server.",
)
def sandbox(
    state_file: Path | None,
    from_file: Path | None,
    listen: str,
    kubeconfig_out: Path | None,
    tls: bool,
    require_client_cert: bool,
    token: str | None,
    proxy: str | None,
    proxy_auth: str | None,
    gateway: str | None,
    emulate: str | None,
    token_ttl: float | None,
) -> None:
    """Run an emulated Kubernetes API server and kubelet for port-forwards.

    kubectl and pfcompose port-forward through it as through a cluster; the pods'
    ports are served by local echo/http/blob servers.
    """
    if state_file is not None and from_file is not None:
        raise click.UsageError("--state and --from are mutually exclusive")
    if require_client_cert and not tls:
        raise click.UsageError("--require-client-cert needs --tls")
    if proxy_auth is not None and (proxy is None or ":" not in proxy_auth):
        raise click.UsageError("--proxy-auth needs --proxy and the form USER:PASSWORD")
    if gateway is not None:
        from pfcompose.sandbox.gateway import parse_gateway

        try:
            parse_gateway(gateway)
        except ValueError as exc:
            raise click.UsageError(f"--gateway: {exc}") from None
    user, _, password = (proxy_auth or "").partition(":")
    proxy_creds = (user, password) if proxy_auth is not None else None
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise click.UsageError(f"--listen: expected HOST:PORT, got {listen!r}")
    try:
        if from_file is not None:
            state = _state_from_forwards(from_file)
        elif state_file is not None:
            state = State.load(state_file)
        else:
            state = demo_state()
    except StateError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG) from None
    keep_freed_buffers()  # the sandbox moves every byte of every benchmark too
    try:
        trio.run(
            _run,
            state,
            host,
            int(port_text),
            kubeconfig_out,
            tls,
            require_client_cert,
            token,
            proxy,
            proxy_creds,
            gateway,
            emulate,
            token_ttl,
        )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        click.echo(f"error: cannot listen on {listen}: {exc.strerror or exc}", err=True)
        raise click.exceptions.Exit(ExitCode.FAILURE) from None


def _state_from_forwards(path: Path) -> State:
    from pfcompose.config import ConfigErrors
    from pfcompose.sandbox.state import state_from_forwards_file

    try:
        return state_from_forwards_file(path)
    except ConfigErrors as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(ExitCode.CONFIG) from None


async def _run(
    state: State,
    host: str,
    port: int,
    kubeconfig_out: Path | None,
    tls: bool,
    require_client_cert: bool,
    token: str | None,
    proxy: str | None = None,
    proxy_creds: tuple[str, str] | None = None,
    gateway: str | None = None,
    emulate: str | None = None,
    token_ttl: float | None = None,
) -> None:
    from pfcompose.sandbox.server import run_sandbox

    user, password = proxy_creds or (None, None)
    async with run_sandbox(
        state,
        tls=tls,
        require_client_cert=require_client_cert,
        token=token,
        host=host,
        port=port,
        kubeconfig_path=kubeconfig_out,
        proxy=proxy,
        proxy_user=user,
        proxy_password=password,
        gateway=gateway,
        emulate=emulate,
        token_ttl=token_ttl,
    ) as sb:
        click.echo(f"Sandbox API server listening on {sb.url}")
        if sb.proxy is not None:
            click.echo(
                f"Sandbox {sb.proxy.kind} proxy listening on "
                f"{sb.proxy.url(with_password=False)} (kubeconfig proxy-url)"
            )
        if sb.gateway is not None:
            click.echo(
                f"Sandbox {sb.gateway.mode} gateway listening on {sb.gateway.url} "
                "(kubeconfig server)"
            )
        if sb.emulate is not None:
            click.echo(f"Emulating a {sb.emulate} API server")
        if token_ttl is not None:
            click.echo(
                f"Tokens live {token_ttl:g}s (kubeconfig user: the exec plugin "
                "pfcompose/sandbox/execplugin.py)"
            )
        click.echo(f"kubeconfig written to {sb.kubeconfig_path} (context pfcompose-sandbox)")
        for pod in sorted(sb.state.pods.values(), key=lambda p: p.key):
            ports = ", ".join(
                f"{p.container_port}{'/' + p.name if p.name else ''}={p.serve.kind}"
                for p in pod.ports
            )
            click.echo(f"  pod {pod.namespace}/{pod.name}: {ports or 'no ports'}")
        click.echo("Ready; press Ctrl-C to stop.")
        sys.stdout.flush()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break  # Ctrl-C or SIGTERM: leave the block, which stops everything


def demo_state() -> State:
    """The cluster ``pfcompose sandbox`` serves without --state/--from: a bit of each kind."""
    return State.from_dict(
        {
            "pods": [
                {
                    "name": "echo",
                    "labels": {"app": "echo"},
                    "ports": [{"containerPort": 5000, "name": "echo", "serve": "echo"}],
                },
                {
                    "name": "blob",
                    "labels": {"app": "blob"},
                    "ports": [{"containerPort": 9000, "name": "blob", "serve": "blob"}],
                },
            ],
            "services": [
                {
                    "name": "web",
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            ],
            "deployments": [
                {
                    "name": "web",
                    "replicas": 2,
                    "template": {
                        "labels": {"app": "web"},
                        "ports": [{"containerPort": 8080, "name": "http", "serve": "http"}],
                    },
                },
            ],
        }
    )
