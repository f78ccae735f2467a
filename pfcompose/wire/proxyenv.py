"""Which proxy a request URL goes through, by Go's ``golang.org/x/net/http/httpproxy``.

client-go uses ``http.ProxyFromEnvironment`` when a kubeconfig cluster has no
``proxy-url``; this is that function's logic, pure (environment in, URL out), so it
can be table-tested against Go's own cases:

* ``HTTPS_PROXY``/``https_proxy`` for ``https`` URLs, ``HTTP_PROXY``/``http_proxy``
  for ``http`` ones (the upper-case name wins when both are non-empty); a value
  without a scheme gets ``http://``. ``HTTP_PROXY`` is ignored under CGI
  (``REQUEST_METHOD`` set), where Go refuses it.
* ``localhost`` and loopback addresses are never proxied, whatever ``NO_PROXY`` says.
* ``NO_PROXY`` is comma-separated: ``*`` (nothing is proxied), an IP or CIDR
  (``10.0.0.0/8``, ``::1``), ``IP:port``, ``[IPv6]:port``, a domain (``foo.com``
  matches ``foo.com`` and ``x.foo.com``), ``.foo.com`` / ``*.foo.com`` (subdomains
  only), each optionally with ``:port``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["NoProxy", "env_proxy_for", "parse_proxy_value", "redact", "split_proxy_url"]

SCHEMES = ("http", "https", "socks5", "socks5h")
_SCHEME_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}

_DEFAULT_PORTS = {"http": "80", "https": "443", "socks5": "1080"}

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _env_any(env: Mapping[str, str], *names: str) -> str:
    """Go's ``getEnvAny``: the first of ``names`` that is set and non-empty."""
    for name in names:
        value = env.get(name, "")
        if value:
            return value
    return ""


def _ip(text: str) -> IP | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_host_port(text: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort`` for what NO_PROXY entries look like; None if no port."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            return None
        return text[1:end], text[end + 2 :]
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        return None
    return host, port


@dataclass(frozen=True)
class _Domain:
    suffix: str  # always starts with "."
    port: str
    match_host: bool  # the entry had no leading dot: the bare domain matches too

    def match(self, host: str, port: str) -> bool:
        if host.endswith(self.suffix) or (self.match_host and host == self.suffix[1:]):
            return not self.port or self.port == port
        return False


class NoProxy:
    """A parsed ``NO_PROXY`` value (Go's ``config.init``)."""

    def __init__(self, value: str) -> None:
        self.everything = False
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._ips: list[tuple[IP, str]] = []
        self._domains: list[_Domain] = []
        for raw in value.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.everything = True
                return
            if "/" in entry:
                try:
                    self._networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    pass
                else:
                    continue
            split = _split_host_port(entry)
            host, port = split if split is not None else (entry, "")
            if split is not None and not host:
                continue  # ":80": malformed, ignored as Go does
            ip = _ip(host)
            if ip is not None:
                self._ips.append((ip, port))
                continue
            if host.startswith("*."):
                host = host[1:]
            match_host = not host.startswith(".")
            if match_host:
                host = "." + host
            self._domains.append(_Domain(_idna(host), port, match_host))

    def bypasses(self, host: str, port: str) -> bool:
        """True when ``host:port`` must be reached directly (Go: ``!useProxy``)."""
        host = host.strip().lower()
        if host == "localhost":
            return True
        ip = _ip(host)
        if ip is not None and ip.is_loopback:
            return True
        if self.everything:
            return True
        if ip is not None:
            if any(ip in net for net in self._networks):
                return True
            # domain entries never match an IP (Go: domainMatch)
            return any(ip == other and (not p or p == port) for other, p in self._ips)
        return any(d.match(host, port) for d in self._domains)


def _idna(host: str) -> str:
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def parse_proxy_value(value: str) -> str | None:
    """Go's ``parseProxy``: a URL, or ``host[:port]`` taken as ``http://host[:port]``."""
    if not value:
        return None
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc:
        return "http://" + value
    return value


def env_proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy URL for a request to ``url`` by the environment, or None (direct)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "https":
        proxy = parse_proxy_value(_env_any(env, "HTTPS_PROXY", "https_proxy"))
    elif scheme == "http":
        proxy = parse_proxy_value(_env_any(env, "HTTP_PROXY", "http_proxy"))
        if proxy is not None and env.get("REQUEST_METHOD"):
            return None  # Go refuses HTTP_PROXY in a CGI environment
    else:
        return None
    if proxy is None:
        return None
    host = _idna(parts.hostname or "")
    try:
        port = str(parts.port) if parts.port is not None else _DEFAULT_PORTS[scheme]
    except ValueError:
        port = _DEFAULT_PORTS[scheme]
    if NoProxy(_env_any(env, "NO_PROXY", "no_proxy")).bypasses(host, port):
        return None
    return proxy


def redact(url: str) -> str:
    """``url`` with its password replaced by ``xxxxx`` (Go's ``URL.Redacted``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<invalid URL>"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:xxxxx@{host}"))


def split_proxy_url(url: str) -> tuple[str, str, int, str | None, str | None]:
    """(scheme, host, port, user, password) of a proxy URL, or ``ValueError`` (one line,
    the URL redacted). Pure: the command line checks a kubeconfig without trio."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid proxy URL {redact(url)!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"proxy URL {redact(url)!r}: scheme must be one of {', '.join(SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"proxy URL {redact(url)!r} has no host")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return scheme, parts.hostname, port or _SCHEME_PORTS[scheme], user, password
