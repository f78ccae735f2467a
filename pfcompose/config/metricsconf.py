"""The metrics endpoint's listen address: ``HOST:PORT``, ``:PORT`` or ``PORT``.

One parser for the file's ``metrics.listen`` and ``up --metrics``, so both word a
mistake the same way. The host is an IP literal or ``localhost`` and defaults to
127.0.0.1: metrics stay on the machine unless the file names another address
(then the loader warns, as it does for a forward's non-loopback ``addresses``).
"""

from __future__ import annotations

from pfcompose.config.addresses import parse_ip_sloppy

__all__ = ["DEFAULT_HOST", "is_loopback_listen", "parse_metrics_listen", "split_listen"]

DEFAULT_HOST = "127.0.0.1"


def parse_metrics_listen(value: object) -> str:
    """The normalised ``host:port`` (``[v6]:port``); ValueError with the one-line reason."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be HOST:PORT, :PORT or a port number")
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [::1]:9464")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    if host in ("", "localhost"):
        host = DEFAULT_HOST
    ip = parse_ip_sloppy(host)
    if ip is None:
        raise ValueError(f"{text!r}: the host must be an IP address or localhost")
    address = str(ip)
    return f"[{address}]:{int(port_text)}" if ip.version == 6 else f"{address}:{int(port_text)}"


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` as :func:`parse_metrics_listen` returns it → ``(host, port)``."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback_listen(listen: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(split_listen(listen)[0]).is_loopback
