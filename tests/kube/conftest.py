"""Fixtures of the kube tests: a trustme CA and its certificates."""

from __future__ import annotations

import pytest
import trustme


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", "kubernetes")


@pytest.fixture(scope="session")
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("alice@example.com", common_name="alice")
