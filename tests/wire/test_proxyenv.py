"""Go's httpproxy rules, table by table (cases after x/net/http/httpproxy's tests)."""

from __future__ import annotations

import pytest

from pfcompose.wire.proxy import parse_proxy_url
from pfcompose.wire.proxyenv import (
    NoProxy,
    env_proxy_for,
    parse_proxy_value,
    redact,
    split_proxy_url,
)

P = "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("env", "url", "want"),
    [
        # which variable for which scheme; upper case wins; lower case alone works
        ({"HTTPS_PROXY": P}, "https://api.example.com", P),
        ({"https_proxy": P}, "https://api.example.com", P),
        ({"HTTPS_PROXY": P, "https_proxy": "http://other:1"}, "https://api.example.com", P),
        ({"HTTPS_PROXY": "", "https_proxy": P}, "https://api.example.com", P),
        ({"HTTP_PROXY": P}, "https://api.example.com", None),
        ({"HTTPS_PROXY": P}, "http://api.example.com", None),
        ({"HTTP_PROXY": P}, "http://api.example.com", P),
        ({"http_proxy": P}, "http://api.example.com", P),
        ({}, "https://api.example.com", None),
        # a bare host[:port] is an http:// proxy; other schemes are kept
        ({"HTTPS_PROXY": "proxy.corp:3128"}, "https://a.b", P),
        ({"HTTPS_PROXY": "socks5://s:1080"}, "https://a.b", "socks5://s:1080"),
        ({"HTTPS_PROXY": "https://p:443"}, "https://a.b", "https://p:443"),
        # CGI: HTTP_PROXY refused, HTTPS_PROXY kept
        ({"HTTP_PROXY": P, "REQUEST_METHOD": "GET"}, "http://a.b", None),
        ({"HTTPS_PROXY": P, "REQUEST_METHOD": "GET"}, "https://a.b", P),
        # localhost and loopback: never proxied, whatever NO_PROXY says
        ({"HTTPS_PROXY": P}, "https://localhost:6443", None),
        ({"HTTPS_PROXY": P}, "https://LOCALHOST:6443", None),
        ({"HTTPS_PROXY": P}, "https://127.0.0.1:6443", None),
        ({"HTTPS_PROXY": P}, "https://127.1.2.3", None),
        ({"HTTPS_PROXY": P}, "https://[::1]:6443", None),
        ({"HTTPS_PROXY": P, "NO_PROXY": "other"}, "https://localhost", None),
        # but not names that merely contain it
        ({"HTTPS_PROXY": P}, "https://localhost.corp", P),
        ({"HTTPS_PROXY": P}, "https://10.0.0.1", P),
    ],
)
def test_env_proxy_for(env: dict[str, str], url: str, want: str | None) -> None:
    assert env_proxy_for(url, env) == want


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypass"),
    [
        ("", "example.com", "443", False),
        ("*", "anything.at.all", "443", True),
        ("*", "10.1.2.3", "443", True),
        ("a.com, *, b.com", "c.com", "443", True),
        # domains: the bare entry matches itself and subdomains
        ("example.com", "example.com", "443", True),
        ("example.com", "api.example.com", "443", True),
        ("example.com", "notexample.com", "443", False),
        ("EXAMPLE.com", "example.com", "443", True),
        (" example.com ", "example.com", "443", True),
        # leading dot / *. : subdomains only
        (".example.com", "example.com", "443", False),
        (".example.com", "api.example.com", "443", True),
        ("*.example.com", "example.com", "443", False),
        ("*.example.com", "a.b.example.com", "443", True),
        # ports
        ("example.com:6443", "example.com", "6443", True),
        ("example.com:6443", "example.com", "443", False),
        (".example.com:6443", "x.example.com", "6443", True),
        # IPs, with and without port, and CIDRs
        ("10.0.0.1", "10.0.0.1", "443", True),
        ("10.0.0.1", "10.0.0.2", "443", False),
        ("10.0.0.1:6443", "10.0.0.1", "6443", True),
        ("10.0.0.1:6443", "10.0.0.1", "443", False),
        ("10.0.0.0/8", "10.200.3.4", "443", True),
        ("10.0.0.0/8", "11.0.0.1", "443", False),
        ("192.168.1.7/24", "192.168.1.200", "443", True),
        ("2001:db8::/32", "2001:db8::17", "443", True),
        ("[2001:db8::1]:6443", "2001:db8::1", "6443", True),
        ("[2001:db8::1]:6443", "2001:db8::1", "443", False),
        ("2001:db8::1", "2001:db8::1", "443", True),
        # a domain entry never matches an IP, a CIDR never matches a name
        ("10.0.0.1", "10.0.0.1.nip.io", "443", False),
        ("10.0.0.0/8", "ten.example", "443", False),
        # malformed entries are skipped, the rest still apply
        (":80, example.com", "example.com", "443", True),
        ("10.0.0.0/33, x.com", "10.0.0.1", "443", False),
        (",,, x.com,", "y.x.com", "443", True),
    ],
)
def test_no_proxy(no_proxy: str, host: str, port: str, bypass: bool) -> None:
    assert NoProxy(no_proxy).bypasses(host, port) is bypass


def test_no_proxy_via_env_with_default_port() -> None:
    env = {"HTTPS_PROXY": P, "NO_PROXY": "api.example.com:443"}
    assert env_proxy_for("https://api.example.com", env) is None
    assert env_proxy_for("https://api.example.com:6443", env) == P
    assert env_proxy_for("https://api.example.com:6443", {**env, "no_proxy": "x"}) == P
    env = {"HTTPS_PROXY": P, "no_proxy": "example.com"}
    assert env_proxy_for("https://x.example.com", env) is None


def test_parse_proxy_value() -> None:
    assert parse_proxy_value("") is None
    assert parse_proxy_value("p:3128") == "http://p:3128"
    assert parse_proxy_value("http://p:3128") == "http://p:3128"


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://p:3128", ("http", "p", 3128, None, None)),
        ("http://p", ("http", "p", 80, None, None)),
        ("https://p", ("https", "p", 443, None, None)),
        ("socks5://p", ("socks5", "p", 1080, None, None)),
        ("SOCKS5H://u:pw@p:9", ("socks5h", "p", 9, "u", "pw")),
        ("http://us%40er:p%3Ass@p:1", ("http", "p", 1, "us@er", "p:ss")),
        ("http://[::1]:8", ("http", "::1", 8, None, None)),
    ],
)
def test_split_proxy_url(url: str, want: tuple[object, ...]) -> None:
    assert split_proxy_url(url) == want


@pytest.mark.parametrize(
    "url", ["ftp://p:1", "http://:8080", "http://p:99999", "socks4://p:1", "p:3128"]
)
def test_split_proxy_url_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="proxy URL"):
        split_proxy_url(url)


def test_errors_never_show_the_password() -> None:
    with pytest.raises(ValueError) as info:
        split_proxy_url("ftp://alice:s3cret@p:1")
    assert "s3cret" not in str(info.value)
    assert "alice:xxxxx@p:1" in str(info.value)
    assert redact("http://alice:s3cret@p:1/x") == "http://alice:xxxxx@p:1/x"
    assert redact("http://p:1") == "http://p:1"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://alice:s3cret@p:3128", "http://alice:xxxxx@p:3128"),
        ("http://alice:@p:3128", "http://alice:xxxxx@p:3128"),  # a password, if empty
        ("http://alice@p:3128", "http://alice@p:3128"),  # no password: Go shows user@
        ("socks5://[::1]:1080", "socks5://[::1]:1080"),
    ],
)
def test_a_proxy_is_shown_as_go_redacts_it(url: str, shown: str) -> None:
    proxy = parse_proxy_url(url)
    assert proxy.url == str(proxy) == shown
    assert repr(proxy) == f"Proxy({shown})"
    assert redact(url) == shown  # the environment's URLs are shown the same way
