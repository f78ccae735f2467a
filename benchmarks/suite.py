"""pfcompose against kubectl and a direct connection, through one sandbox process.

    python -m benchmarks [--quick] [--size 512MiB] [--repeat 3] [--subjects a,b,…]

One sandbox process serves a ``bench`` pod (``blob`` on 9000, ``echo`` on 5000)
and the ``scale-*`` pods. Each subject — the pod's own listener (``direct``, the
ceiling), ``kubectl port-forward`` over SPDY and over its WebSocket tunnel, and
``pfcompose up`` with each transport — runs as its own process, started afresh
for every repeat, and is measured from here: bulk throughput each way
(every byte verified), new-connection latency, 200 and 1000 parallel echo
connections, RSS idle and peak, CPU seconds per GiB. Then the scale case: one
``pfcompose up`` with N selector forwards against N kubectl processes. Medians
of the repeats go into a table and a JSON file (benchmarks/results/).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import clients, procs

BLOB, ECHO = 9000, 5000
RESULTS = Path(__file__).parent / "results"
KUBECTL_SUBJECTS = ("kubectl-spdy", "kubectl-ws")
TRANSPORTS = ("spdy", "spdy-over-websocket", "auto", "websocket")
ALL_SUBJECTS = ("direct", *KUBECTL_SUBJECTS, *(f"pfcompose-{t}" for t in TRANSPORTS))
MIB = 1 << 20
GIB = 1 << 30

METRICS: dict[str, tuple[str, bool]] = {  # key → (column title, higher is better)
    "upload_mbps": ("up MB/s", True),
    "download_mbps": ("down MB/s", True),
    "latency_median_ms": ("conn med ms", False),
    "latency_p99_ms": ("conn p99 ms", False),
    "conc_small_s": ("c{small} s", False),
    "conc_large_s": ("c{large} s", False),
    "rss_idle_mib": ("RSS idle MiB", False),
    "rss_peak_mib": ("RSS peak MiB", False),
    "cpu_s_per_gib": ("CPU s/GiB", False),
}


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; children (the forwarders) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def sandbox_state(scale: int) -> dict[str, Any]:
    pods: list[dict[str, Any]] = [
        {"name": "bench", "labels": {"app": "bench"},
         "ports": [{"containerPort": BLOB, "name": "blob", "serve": "blob"},
                   {"containerPort": ECHO, "name": "echo", "serve": "echo"}]},
    ]
    pods += [{"name": f"scale-{i}", "labels": {"app": f"scale-{i}"},
              "ports": [{"containerPort": ECHO, "name": "echo", "serve": "echo"}]}
             for i in range(scale)]
    return {"pods": pods}


# -- one subject ---------------------------------------------------------------------------

@contextmanager
def forwarder(subject: str, args: argparse.Namespace, sandbox: procs.SandboxInfo,
              workdir: Path) -> Iterator[procs.Proc | None]:
    """Start the subject's process (``None`` for direct); stopped when the block ends."""
    if subject == "direct":
        yield None
        return
    if subject.startswith("kubectl-"):
        proc = procs.start_kubectl(args.kubectl_path, sandbox, "pod/bench", (BLOB, ECHO),
                                   workdir, websockets=subject == "kubectl-ws", name=subject)
    else:
        transport = subject.removeprefix("pfcompose-")
        fwd = {"bench": {"target": "pod/bench", "ports": [f":{BLOB}", f":{ECHO}"],
                         "transport": transport}}
        proc = procs.start_pfcompose(sandbox, fwd, workdir, name=subject)
    with proc:
        yield proc


def _attempt(result: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # a failed measurement is recorded, the run goes on
        result.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
        print(f"    {key}: FAILED {type(exc).__name__}: {exc}", flush=True)
        return None


def measure_subject(subject: str, args: argparse.Namespace, sandbox: procs.SandboxInfo,
                    sandbox_pid: int, workdir: Path, shas: dict[int, str | None]
                    ) -> dict[str, Any]:
    result: dict[str, Any] = {"subject": subject}
    result["sandbox_settle_s"] = procs.wait_until_idle(sandbox_pid)
    start = time.perf_counter()
    with forwarder(subject, args, sandbox, workdir) as proc:
        result["startup_s"] = time.perf_counter() - start
        ports = proc.ports if proc else {BLOB: sandbox.backend("bench", BLOB),
                                         ECHO: sandbox.backend("bench", ECHO)}
        pid = proc.pid if proc else None
        if pid:
            result["rss_idle_mib"] = procs.rss_mib(pid)
        size = args.size
        cpu_total = 0.0
        moved = 0
        for direction, fn in (("upload", clients.upload), ("download", clients.download)):
            cpu0 = procs.cpu_seconds(pid) if pid else 0.0
            sb0 = procs.cpu_seconds(sandbox_pid)
            elapsed = _attempt(result, direction,
                               functools.partial(fn, ports[BLOB], size, args.op_timeout,
                                                 args.verify, shas[size]))
            if elapsed is None:
                continue
            result[f"{direction}_mbps"] = size / elapsed / 1e6
            sandbox_cpu = procs.cpu_seconds(sandbox_pid) - sb0
            result[f"sandbox_cpu_s_per_gib_{direction}"] = sandbox_cpu / size * GIB
            result[f"sandbox_busy_{direction}"] = sandbox_cpu / elapsed  # 1.0 = one core, saturated
            if pid:
                cpu = procs.cpu_seconds(pid) - cpu0
                result[f"cpu_s_per_gib_{direction}"] = cpu / size * GIB
                cpu_total += cpu
                moved += size
        if pid and moved:
            result["cpu_s_per_gib"] = cpu_total / moved * GIB
        lat = _attempt(result, "latency",
                       lambda: clients.latency(ports[ECHO], args.rounds, args.time_limit))
        if lat is not None:
            result["latency"] = asdict(lat)
            result["latency_median_ms"] = lat.median_ms
            result["latency_p99_ms"] = lat.p99_ms
        for label, count in (("conc_small", args.conc[0]), ("conc_large", args.conc[1])):
            if count <= 0:
                continue
            conc = _attempt(result, label, functools.partial(
                clients.concurrency, ports[ECHO], count, args.conc_bytes, args.time_limit))
            if conc is not None:
                result[label] = asdict(conc)
                if conc.failed == 0:
                    result[f"{label}_s"] = conc.seconds
                else:
                    result.setdefault("errors", {})[label] = (
                        f"{conc.failed} of {count} lost: {conc.first_error}")
                    print(f"    {label}: {conc.failed} of {count} lost: {conc.first_error}",
                          flush=True)
        if pid:
            result["rss_end_mib"] = procs.rss_mib(pid)
            result["rss_peak_mib"] = procs.hwm_mib(pid)
    return result


# -- scale -----------------------------------------------------------------------------------

def measure_scale(args: argparse.Namespace, sandbox: procs.SandboxInfo,
                  workdir: Path) -> dict[str, Any]:
    n = args.scale
    result: dict[str, Any] = {"forwards": n}
    fwds = {f"s{i}": {"selector": {"app": f"scale-{i}"}, "ports": [f":{ECHO}"]}
            for i in range(n)}
    t0 = time.time()
    with procs.start_pfcompose(sandbox, fwds, workdir, name="pfcompose-scale",
                               timeout=args.time_limit) as proc:
        events = [json.loads(line) for line in proc.output().splitlines()
                  if line.startswith("{")]
        listening = [e["time"] for e in events if e.get("kind") == "listening"]
        ready = [e["time"] for e in events if e.get("state") == "ready"]
        result["pfcompose_all_listening_s"] = max(listening) - t0
        result["pfcompose_all_ready_s"] = max(ready) - t0
        result["pfcompose_rss_mib"] = procs.rss_mib(proc.pid)
        lat = _attempt(result, "scale-echo", lambda: clients.latency(
            proc.ports[ECHO], 1, args.time_limit))
        result["pfcompose_echo_ok"] = lat is not None
    if not args.kubectl_path:
        return result
    with ExitStack() as stack:
        t0 = time.perf_counter()
        kubectls = []
        for i in range(n):  # started together, as a user's script would
            home = workdir / f"home-scale-{i}"
            home.mkdir(exist_ok=True)
            env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
            env["HOME"] = str(home)
            cmd = [args.kubectl_path, "--kubeconfig", str(sandbox.kubeconfig), "--cache-dir",
                   str(home / "cache"), "port-forward", f"pod/scale-{i}", f":{ECHO}",
                   "--address", "127.0.0.1"]
            kubectls.append(stack.enter_context(
                procs.spawn(f"kubectl-scale-{i}", cmd, workdir / f"kubectl-scale-{i}.log", env)))
        for k in kubectls:
            k.wait_until(lambda out: "Forwarding from" in out, args.time_limit, "forwarding")
        result["kubectl_all_listening_s"] = time.perf_counter() - t0
        rss = [procs.rss_mib(k.pid) for k in kubectls]
        result["kubectl_one_rss_mib"] = statistics.median(rss)
        result["kubectl_total_rss_mib"] = sum(rss)
    result["pfcompose_vs_2_kubectl"] = (
        result["pfcompose_rss_mib"] / (2 * result["kubectl_one_rss_mib"]))
    result["pfcompose_vs_n_kubectl"] = (
        result["pfcompose_rss_mib"] / result["kubectl_total_rss_mib"])
    return result


# -- summary ----------------------------------------------------------------------------------

def medians(runs: list[dict[str, Any]], subjects: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    keys = [*METRICS, "startup_s", "cpu_s_per_gib_upload", "cpu_s_per_gib_download",
            "sandbox_cpu_s_per_gib_upload", "sandbox_cpu_s_per_gib_download",
            "sandbox_busy_upload", "sandbox_busy_download"]
    for s in subjects:
        rows = [r for r in runs if r["subject"] == s]
        out[s] = {}
        for k in keys:
            values = [r[k] for r in rows if r.get(k) is not None]
            if values:
                out[s][k] = statistics.median(values)
    return out


def ratios(med: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """pfcompose ÷ reference, per metric (throughput: higher is better; the rest: lower)."""
    out: dict[str, dict[str, float]] = {}
    for s in med:
        if not s.startswith("pfcompose-"):
            continue
        for ref in ("kubectl-spdy", "kubectl-ws", "direct"):
            if ref not in med:
                continue
            row = {k: med[s][k] / med[ref][k] for k in METRICS
                   if k in med[s] and med[ref].get(k)}
            if row:
                out[f"{s.removeprefix('pfcompose-')} / {ref}"] = row
    return out


def _titles(args: argparse.Namespace) -> dict[str, str]:
    return {k: t.format(small=args.conc[0], large=args.conc[1]) for k, (t, _) in METRICS.items()}


def format_table(med: dict[str, dict[str, float]], rat: dict[str, dict[str, float]],
                 args: argparse.Namespace) -> str:
    titles = _titles(args)
    head = ["subject", *titles.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, row in med.items():
        cells = [f"{row[k]:.3g}" if k in row else "–" for k in METRICS]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    note = "Ratios, pfcompose ÷ reference (throughput: ≥ 1 is better; others: ≤ 1 is better)"
    lines += ["", note,
              "", "| transport / reference | " + " | ".join(titles.values()) + " |",
              "|" + "---|" * (len(titles) + 1)]
    for name, row in rat.items():
        cells = [f"{row[k]:.2f}" if k in row else "–" for k in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_detail(med: dict[str, dict[str, float]]) -> str:
    """Where the bulk-transfer CPU went: the forwarder's and the sandbox's (busy 1.0 = a core)."""
    cols = ["cpu_s_per_gib_upload", "cpu_s_per_gib_download", "sandbox_busy_upload",
            "sandbox_busy_download", "startup_s"]
    head = ["subject", "fwd CPU s/GiB up", "fwd CPU s/GiB down", "sandbox busy up",
            "sandbox busy down", "start s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, row in med.items():
        cells = [f"{row[k]:.2f}" if k in row else "–" for k in cols]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_scale(scale: list[dict[str, Any]]) -> str:
    if not scale:
        return ""
    keys = sorted({k for s in scale for k, v in s.items() if isinstance(v, (int, float))
                   and not isinstance(v, bool)})
    lines = [f"Scale ({scale[0]['forwards']} selector forwards), medians of {len(scale)}:"]
    for k in keys:
        values = [s[k] for s in scale if k in s]
        lines.append(f"  {k}: {statistics.median(values):.3g}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpus": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0],
                            "platform": platform.platform()}
    return info


def kubectl_version(path: str) -> str:
    try:
        out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True,
                             timeout=20, check=False).stdout
        return str(json.loads(out)["clientVersion"]["gitVersion"])
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return "unknown"


# -- main ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="pfcompose vs kubectl vs a direct connection.")
    p.add_argument("--quick", action="store_true",
                   help="64 MiB, 300 rounds, 1 repeat (a first look)")
    p.add_argument("--size", type=parse_size, default=None, help="bytes each way (512MiB)")
    p.add_argument("--rounds", type=int, default=None, help="latency rounds (1000)")
    p.add_argument("--conc", default="200,1000", help="two parallel-connection counts")
    p.add_argument("--conc-bytes", type=parse_size, default=MIB, help="bytes per connection")
    p.add_argument("--repeat", type=int, default=None, help="runs of everything (3); medians")
    p.add_argument("--subjects", default=",".join(ALL_SUBJECTS), help="comma-separated")
    p.add_argument("--scale", type=int, default=50, help="forwards in the scale case (0: skip)")
    p.add_argument("--kubectl", default="kubectl", help="kubectl binary (skipped if absent)")
    p.add_argument("--time-limit", type=float, default=300.0, help="per measurement, seconds")
    p.add_argument("--op-timeout", type=float, default=60.0, help="socket timeout, seconds")
    p.add_argument("--verify", choices=clients.VERIFY_MODES, default="pattern",
                   help="throughput check: byte-exact against the pattern (default), or "
                        "sha256 digests (the pod and this client hash: ~390 MB/s caps)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (benchmarks/results/…)")
    return p


def _terminate(signum: int, frame: object) -> None:
    procs.stop_all()  # first, in case the exit below lands inside a task that swallows it
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    args.size = args.size or (64 * MIB if args.quick else 512 * MIB)
    args.rounds = args.rounds or (300 if args.quick else 1000)
    args.repeat = args.repeat or (1 if args.quick else 3)
    try:
        counts = [int(c) for c in args.conc.split(",") if c.strip()]
    except ValueError:
        counts = []
    if not 1 <= len(counts) <= 2 or min(counts) < 0:
        print(f"--conc: one or two connection counts, e.g. 200,1000 (got {args.conc!r})",
              file=sys.stderr)
        return 2
    args.conc = [*counts, 0][:2]  # 0: that case is skipped
    args.kubectl_path = procs.kubectl_path(args.kubectl)
    subjects = [s for s in args.subjects.split(",") if s]
    unknown = set(subjects) - set(ALL_SUBJECTS)
    if unknown:
        print(f"error: unknown subjects {sorted(unknown)}; known: {', '.join(ALL_SUBJECTS)}",
              file=sys.stderr)
        return 2
    skipped = {}
    if not args.kubectl_path:
        for s in KUBECTL_SUBJECTS:
            if s in subjects:
                subjects.remove(s)
                skipped[s] = f"kubectl not found ({args.kubectl})"
        print(f"kubectl not found ({args.kubectl}): kubectl subjects skipped", flush=True)
    nofile = raise_nofile()
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
        "kubectl": kubectl_version(args.kubectl_path) if args.kubectl_path else None,
        "config": {"size": args.size, "rounds": args.rounds, "conc": args.conc,
                   "conc_bytes": args.conc_bytes, "repeat": args.repeat, "scale": args.scale,
                   "verify": args.verify,
                   "subjects": subjects, "nofile": list(nofile)},
        "skipped": skipped, "runs": [], "scale": [],
    }
    # sha256 mode: the expected digest is computed once, before any timing
    shas = {args.size: clients.blob_sha256(args.size) if args.verify == "sha256" else None}
    with tempfile.TemporaryDirectory(prefix="pfcompose-bench-") as tmp:
        workdir = Path(tmp)
        sb_proc, sandbox = procs.start_sandbox(sandbox_state(args.scale), workdir)
        with sb_proc:
            report["sandbox_rss_idle_mib"] = procs.rss_mib(sb_proc.pid)
            for rep in range(args.repeat):
                order = subjects[rep % len(subjects):] + subjects[:rep % len(subjects)]
                for subject in order:
                    print(f"[{rep + 1}/{args.repeat}] {subject}", flush=True)
                    try:
                        r = measure_subject(subject, args, sandbox, sb_proc.pid, workdir, shas)
                    except procs.StartError as exc:
                        r = {"subject": subject, "errors": {"start": str(exc)}}
                        print(f"    start: FAILED {exc}", flush=True)
                    r["repeat"] = rep
                    report["runs"].append(r)
                    print("    " + ", ".join(f"{k}={r[k]:.3g}" for k in METRICS if k in r),
                          flush=True)
                if args.scale:
                    print(f"[{rep + 1}/{args.repeat}] scale ×{args.scale}", flush=True)
                    try:
                        report["scale"].append(measure_scale(args, sandbox, workdir))
                    except procs.StartError as exc:
                        report["scale"].append({"forwards": args.scale, "error": str(exc)})
                        print(f"    scale: FAILED {exc}", flush=True)
            report["sandbox_rss_peak_mib"] = procs.hwm_mib(sb_proc.pid)
    med = medians(report["runs"], subjects)
    rat = ratios(med)
    report["medians"], report["ratios"] = med, rat
    table = format_table(med, rat, args)
    print()
    print(f"{report['machine']['cpus']} CPUs ({report['machine']['cpu']}), kubectl "
          f"{report['kubectl']}, {args.size / MIB:g} MiB each way, {args.rounds} rounds, "
          f"{args.conc[0]}/{args.conc[1]} × {args.conc_bytes / MIB:g} MiB, "
          f"medians of {args.repeat}, throughput verified by {args.verify}")
    print(table)
    print()
    print(format_detail(med))
    good_scale = [s for s in report["scale"] if "error" not in s]
    if good_scale:
        print()
        print(format_scale(good_scale))
    out = args.out or RESULTS / time.strftime("bench-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")
    failures = [r for r in report["runs"] if r.get("errors")]
    return 1 if failures else 0
