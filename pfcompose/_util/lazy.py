"""Package attributes imported on first use (PEP 562).

``pfcompose.config`` and ``pfcompose.kube`` re-export names from their modules, but
the forwarding runtime must be able to import one light module of each (the plan's
dataclasses, the access material) without the package pulling in pydantic or trio.
A module may not share its name with an attribute exported this way: once the
submodule is imported, the import system sets the package attribute to the module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``name`` from ``package.<where[name]>``."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain one
        return value

    return __getattr__
