"""How ``pfcompose up`` hands a validated plan to the lean runtime.

``up`` is two phases with very different needs. Loading and validating the file
takes click, pyyaml, pydantic and the kubernetes package; forwarding bytes for
hours takes trio and this package's wire code. So once the command line has a
valid plan and an evaluated kubeconfig, it *replaces itself* (``execve``: same
PID, same terminal, same signals) with a lean interpreter that imports only the
forwarding modules (:mod:`pfcompose.up.runtime`): ``python -S`` (no ``site`` hooks)
given the parent's ``sys.path``, and the plan as JSON on an inherited memory file
(``memfd``). Re-evaluating credentials later (an exec plugin's token expired, a
kubeconfig changed) runs the kubernetes package in a short-lived helper process
(:func:`pfcompose.kube.cache.evaluate_in_subprocess`). Resident memory of a
running ``up`` drops from ~54 MiB to ~28.5 MiB (docs/performance.md).

This module is what the command line imports for it: no trio, nothing that the
hand-over does not need.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from pfcompose.config.spec import Plan, plan_from_json, plan_to_json
from pfcompose.kube.access import Materials, materials_from_json, materials_to_json
from pfcompose.platform.process import CAN_EXEC, private_file, replace_process

__all__ = ["CAN_EXEC", "Launch", "exec_lean", "import_path", "lean_argv"]


@dataclass(frozen=True)
class Launch:
    """A validated plan handed from the command line to a runtime: the foreground one
    (after ``execve``) or ``up -d``'s daemon (on its stdin). JSON-able, credentials
    included: it only ever travels through a private file descriptor or pipe."""

    plan: Plan
    selected: tuple[str, ...] = ()  # ``up -d a b``: reconcile leaves other forwards alone
    kubeconfig: str | None = None
    context: str | None = None
    as_json: bool = False
    quiet_connections: bool = False
    ports_env: Path | None = None  # absolute; the flag's (foreground: else the file's)
    log_file: Path | None = None  # absolute; daemon: None = the project's default
    materials: Materials = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": plan_to_json(self.plan),
            "selected": list(self.selected),
            "kubeconfig": self.kubeconfig,
            "context": self.context,
            "as_json": self.as_json,
            "quiet_connections": self.quiet_connections,
            "ports_env": str(self.ports_env) if self.ports_env else None,
            "log_file": str(self.log_file) if self.log_file else None,
            "materials": materials_to_json(self.materials),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Launch:
        return cls(
            plan=plan_from_json(data["plan"]),
            selected=tuple(data.get("selected", ())),
            kubeconfig=data.get("kubeconfig"),
            context=data.get("context"),
            as_json=bool(data.get("as_json")),
            quiet_connections=bool(data.get("quiet_connections")),
            ports_env=Path(data["ports_env"]) if data.get("ports_env") else None,
            log_file=Path(data["log_file"]) if data.get("log_file") else None,
            materials=materials_from_json(data.get("materials", ())),
        )


_BOOT = (
    "import sys, os, json; f = os.fdopen(int(sys.argv[1]), 'rb'); d = json.load(f); "
    "f.close(); sys.path[:0] = d.pop('path'); "
    "from pfcompose.up.runtime import main; box = [d]; del d; sys.exit(main(box.pop()))"
)


def lean_argv(boot: str, *args: str) -> list[str]:
    """``python -S -c BOOT ARGS…``: no ``site`` (its .pth hooks cost ~4 MiB resident);
    ``BOOT`` puts the parent's ``sys.path`` back before importing anything of ours."""
    return [sys.executable, "-S", "-c", boot, *args]


def import_path() -> list[str]:
    """This process's import path, with this package's root first (an editable
    install is found through a ``site`` hook the lean process does not run)."""
    root = str(Path(__file__).resolve().parents[2])  # the directory holding pfcompose/
    return [root, *(entry for entry in sys.path if entry != root)]


def exec_lean(launch: Launch) -> NoReturn:
    """Replace this process with the lean runtime running ``launch``."""
    data = launch.to_json()
    data["path"] = import_path()
    fd = private_file()
    with os.fdopen(os.dup(fd), "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    replace_process(lean_argv(_BOOT, str(fd), *sys.argv))
