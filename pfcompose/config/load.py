"""``load_plan``: files → YAML with positions → interpolation → merge → models → Plan.

Each stage reports problems instead of stopping, so the user sees every error of
every file in one run, sorted by where they were written.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pfcompose.config.discovery import (
    CANDIDATES,
    EnvFileError,
    discover,
    display_name,
    normalize_project_name,
    read_env_file,
)
from pfcompose.config.interpolate import interpolate, is_extension_key
from pfcompose.config.merge import merge_all
from pfcompose.config.metricsconf import is_loopback_listen, parse_metrics_listen
from pfcompose.config.model import (
    NAME_PATTERN,
    Defaults,
    FileModel,
    Forward,
    HealthCheck,
    Metrics,
    PortLong,
    Reconnect,
)
from pfcompose.config.plan import (
    BuiltForward,
    Plan,
    build_forward,
    find_conflicts,
    forward_warnings,
)
from pfcompose.config.problems import ConfigErrors, Pos, Problem, format_path, unique
from pfcompose.config.yamlsource import Map, Node, Scalar, find, load_yaml, to_plain

__all__ = ["PROFILES_VARIABLE", "load_plan"]

PROFILES_VARIABLE = "PFCOMPOSE_PROFILES"

_M = TypeVar("_M", bound=BaseModel)


def load_plan(
    files: Sequence[Path] = (),
    *,
    project_directory: Path | None = None,
    project_name: str | None = None,
    env_files: Sequence[Path] = (),
    profiles: Sequence[str] = (),
    selected: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Read, merge and validate the configuration; raises ConfigErrors with every problem."""
    return _Loader(environ).load(
        files, project_directory, project_name, env_files, profiles, selected
    )


class _Loader:
    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.cwd = Path.cwd()
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.order: dict[str, int] = {}
        self.partial: dict[int, frozenset[str]] = {}  # id(model) -> keys that failed
        self.sort_after: dict[int, Problem] = {}  # id(problem) -> the problem it follows

    # -- stages ---------------------------------------------------------------------------

    def load(
        self,
        files: Sequence[Path],
        project_directory: Path | None,
        project_name: str | None,
        env_files: Sequence[Path],
        profiles: Sequence[str],
        selected: Sequence[str],
    ) -> Plan:
        named = self._files(files, project_directory)
        if project_directory is not None:
            directory = project_directory.resolve()
        else:
            directory = named[0][1].resolve().parent
        env = {**self._env_files(env_files, directory), **self.environ}

        trees: list[Node] = []
        for display, path in named:
            tree = self._read(display, path)
            if tree is None:
                continue
            tree, errors, warnings = interpolate(tree, env)
            self.errors.extend(errors)
            self.warnings.extend(warnings)
            trees.append(tree)
        if self.errors:
            raise self._failure()
        merged = merge_all(trees)
        root = merged if isinstance(merged, Map) else Map({}, Pos(named[0][0], 1, 1))

        built = self._validate(root, named[0][0])
        name = self._project_name(root, project_name, directory)
        ports_env = self._ports_env(root, directory)
        metrics = self._metrics(root)
        active = self._active(built, root, profiles, selected, env)
        if self.errors:
            raise self._failure()
        self.errors.extend(find_conflicts(active))
        if self.errors:
            raise self._failure()
        for forward in active:
            self.warnings.extend(forward_warnings(forward))
        return Plan(
            name=name,
            project_directory=directory,
            files=tuple(path.resolve() for _, path in named),
            forwards={forward.spec.name: forward.spec for forward in active},
            warnings=tuple(self._sorted(unique(self.warnings))),
            ports_env=ports_env,
            metrics=metrics,
        )

    def _files(
        self, files: Sequence[Path], project_directory: Path | None
    ) -> list[tuple[str, Path]]:
        if files:
            named = [(str(path), path) for path in files]
        else:
            start = project_directory if project_directory is not None else self.cwd
            found = discover(start)
            if not found:
                raise ConfigErrors([Problem(None, None, None, "", (
                    f"no configuration file found in {start} or its parents "
                    f"(looked for {', '.join(CANDIDATES)})"
                ))])  # fmt: skip
            named = [(display_name(path, self.cwd), path) for path in found]
        for index, (display, _) in enumerate(named):
            self.order.setdefault(display, index)
        return named

    def _env_files(self, env_files: Sequence[Path], directory: Path) -> dict[str, str]:
        if env_files:
            candidates = [(str(path), path, True) for path in env_files]
        else:
            candidates = [(display_name(directory / ".env", self.cwd), directory / ".env", False)]
        values: dict[str, str] = {}
        for display, path, required in candidates:
            if not required and not path.is_file():
                continue
            try:
                values.update(read_env_file(path))
            except OSError as exc:
                self.errors.append(Problem(display, None, None, "", _os_message(exc)))
            except UnicodeDecodeError as exc:
                self.errors.append(Problem(display, None, None, "", f"not UTF-8: {exc.reason}"))
            except EnvFileError as exc:
                self.errors.append(Problem(display, exc.line, 1, "", str(exc)))
        return values

    def _read(self, display: str, path: Path) -> Node | None:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except OSError as exc:
            self.errors.append(Problem(display, None, None, "", _os_message(exc)))
            return None
        except UnicodeDecodeError as exc:
            self.errors.append(Problem(display, None, None, "", f"not UTF-8: {exc.reason}"))
            return None
        tree, problems = load_yaml(text, display)
        self.errors.extend(problems)
        if tree is None:
            return None
        if not isinstance(tree, Map):
            self.errors.append(Problem.at(tree.pos, "", (
                "the file must be a mapping with the keys name, defaults and forwards"
            )))  # fmt: skip
            return None
        return tree

    def _validate(self, root: Map, first_file: str) -> list[BuiltForward]:
        for key, key_pos in root.keys.items():
            if key not in FileModel.model_fields and not is_extension_key((), key):
                self.errors.append(_unknown_key(key_pos, (key,), key, FileModel))
        name_node = root.entries.get("name")
        if name_node is not None and not (
            isinstance(name_node, Scalar) and isinstance(name_node.value, str | type(None))
        ):
            self.errors.append(Problem.at(name_node.pos, "name", "the name must be a string"))

        defaults_node = root.entries.get("defaults")
        defaults = self._model(Defaults, defaults_node, ("defaults",)) or Defaults()

        forwards_node = root.entries.get("forwards")
        if forwards_node is None:
            self.errors.append(Problem.at(
                Pos(first_file, 1, 1), "forwards", "required key is missing"
            ))  # fmt: skip
            return []
        if not isinstance(forwards_node, Map):
            self.errors.append(Problem.at(
                forwards_node.pos, "forwards", "forwards must be a mapping of name -> forward"
            ))  # fmt: skip
            return []
        built: list[BuiltForward] = []
        for name, node in forwards_node.entries.items():
            path = ("forwards", name)
            if not _valid_name(name):
                self.errors.append(Problem.at(forwards_node.keys[name], format_path(path), (
                    f'invalid forward name "{name}": use lowercase letters, digits, '
                    '"_", "." and "-", starting with a letter or digit'
                )))  # fmt: skip
            model = self._model(Forward, node, path)
            if model is None:
                continue
            skip = self.partial.get(id(model), frozenset())
            forward_key = forwards_node.keys.get(name)
            forward, problems = build_forward(
                name, model, node, defaults, defaults_node, skip, key_pos=forward_key
            )
            self._after_unknown_keys(path, problems)
            self.errors.extend(problems)
            if forward is not None:
                built.append(forward)
        return built

    def _model(self, cls: type[_M], node: Node | None, path: tuple[str | int, ...]) -> _M | None:
        if node is None or (isinstance(node, Scalar) and node.value is None):
            if cls is Forward:
                self.errors.append(Problem.at(
                    None if node is None else node.pos, format_path(path),
                    "a forward must be a mapping (target or selector, ports, ...)",
                ))  # fmt: skip
                return None
            return cls.model_validate({})
        if not isinstance(node, Map):
            self.errors.append(Problem.at(node.pos, format_path(path), "must be a mapping"))
            return None
        plain = {
            key: to_plain(value)
            for key, value in node.entries.items()
            if not is_extension_key(path, key)
        }
        try:
            return cls.model_validate(plain)
        except ValidationError as exc:
            self.errors.extend(_validation_problems(exc, node, path, cls))
            failed = {error["loc"][0] for error in exc.errors() if error["loc"]}
        # Validate what is left, so the rules of later stages still report on it.
        rest = {key: value for key, value in plain.items() if key not in failed}
        try:
            partial = cls.model_validate(rest)
        except ValidationError:  # pragma: no cover - errors are per top-level key
            return None
        self.partial[id(partial)] = frozenset(str(key) for key in failed)
        return partial

    def _metrics(self, root: Map) -> str | None:
        """``metrics: {listen: ...}``: the address, checked; a warning if not loopback."""
        node = root.entries.get("metrics")
        model = self._model(Metrics, node, ("metrics",))
        if model is None or model.listen is None or not isinstance(node, Map):
            return None
        listen_node = node.entries["listen"]
        try:
            listen = parse_metrics_listen(model.listen)
        except ValueError as exc:
            self.errors.append(Problem.at(listen_node.pos, "metrics.listen", str(exc)))
            return None
        if not is_loopback_listen(listen):
            self.warnings.append(Problem.at(listen_node.pos, "metrics.listen", (
                f"{listen} is not a loopback address: the metrics are reachable from the network"
            )))  # fmt: skip
        return listen

    def _ports_env(self, root: Map, directory: Path) -> Path | None:
        node = root.entries.get("ports_env")
        if node is None or (isinstance(node, Scalar) and node.value in (None, "")):
            return None
        if not (isinstance(node, Scalar) and isinstance(node.value, str)):
            self.errors.append(Problem.at(node.pos, "ports_env", "ports_env must be a file path"))
            return None
        return directory / node.value

    def _project_name(self, root: Map, option: str | None, directory: Path) -> str:
        node = root.entries.get("name")
        written = node.value if isinstance(node, Scalar) and isinstance(node.value, str) else None
        if written:
            source, pos, raw = "name", node.pos if node else None, written
        elif option:
            source, pos, raw = "project name", None, option
        else:
            source, pos, raw = "project name", None, directory.name
        name = normalize_project_name(raw)
        if not name:
            self.errors.append(Problem.at(pos, source if pos else "", (
                f'project name "{raw}" has no letter or digit; set name: or -p'
            )))  # fmt: skip
        return name

    def _active(
        self,
        built: list[BuiltForward],
        root: Map,
        profiles: Sequence[str],
        selected: Sequence[str],
        env: Mapping[str, str],
    ) -> list[BuiltForward]:
        forwards_node = root.entries.get("forwards")
        declared = set(forwards_node.entries) if isinstance(forwards_node, Map) else set()
        for name in selected:
            if name not in declared:
                self.errors.append(Problem(None, None, None, "", f"no such forward: {name}"))
        if selected:
            wanted = set(selected)
            return [forward for forward in built if forward.spec.name in wanted]
        enabled = {p.strip() for p in profiles if p.strip()}
        enabled |= {p.strip() for p in env.get(PROFILES_VARIABLE, "").split(",") if p.strip()}
        return [
            forward
            for forward in built
            if not forward.spec.profiles
            or "*" in enabled
            or enabled.intersection(forward.spec.profiles)
        ]

    # -- reporting ------------------------------------------------------------------------

    def _after_unknown_keys(self, path: tuple[str | int, ...], problems: list[Problem]) -> None:
        """A missing key reported at the forward's key line sorts after that forward's
        unknown keys: ``targt:`` explains "needs a target", so it is read first."""
        prefix = format_path(path) + "."
        unknown = [
            p
            for p in self.errors
            if p.message.startswith("unknown key")
            and p.path.startswith(prefix)
            and p.line is not None
        ]
        if not unknown:
            return
        last = max(unknown, key=lambda p: (p.line or 0, p.column or 0))
        for problem in problems:
            if (
                problem.path in (format_path(path), prefix + "ports")
                and problem.line is not None
                and (problem.line, problem.column or 0) < (last.line or 0, last.column or 0)
            ):
                self.sort_after[id(problem)] = last

    def _sorted(self, problems: list[Problem]) -> list[Problem]:
        def key(problem: Problem) -> tuple[int, int, int, int]:
            anchor = self.sort_after.get(id(problem), problem)
            late = 1 if anchor is not problem else 0
            if anchor.file is None:
                return (len(self.order) + 1, 0, 0, late)
            return (
                self.order.get(anchor.file, len(self.order)),
                anchor.line or 0,
                anchor.column or 0,
                late,
            )

        return sorted(problems, key=key)

    def _failure(self) -> ConfigErrors:
        return ConfigErrors(self._sorted(unique(self.errors)))


def _valid_name(name: str) -> bool:
    return re.match(NAME_PATTERN, name) is not None


def _os_message(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"cannot read file: {reason[:1].lower()}{reason[1:]}"


_NESTED: dict[str, type[BaseModel]] = {
    "reconnect": Reconnect,
    "ports": PortLong,
    "healthcheck": HealthCheck,
}


def _unknown_key(
    pos: Pos | None, path: tuple[str | int, ...], key: str, model: type[BaseModel]
) -> Problem:
    message = "unknown key"
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    if close:
        message += f', did you mean "{close[0]}"?'
    return Problem.at(pos, format_path(path), message)


def _validation_problems(
    exc: ValidationError, node: Map, base: tuple[str | int, ...], model: type[BaseModel]
) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors():
        loc = tuple(
            part for part in error["loc"] if not (isinstance(part, str) and part.startswith("~"))
        )
        path = (*base, *loc)
        if error["type"] == "extra_forbidden":
            parent = find(node, *loc[:-1])
            key = str(loc[-1])
            pos = parent.keys.get(key) if isinstance(parent, Map) else None
            owner = model if len(loc) == 1 else _NESTED.get(str(loc[0]), model)
            problems.append(_unknown_key(pos, path, key, owner))
            continue
        target: Any = find(node, *loc)
        if target is None:  # a missing key: point at the mapping that lacks it
            target = find(node, *loc[:-1]) or node
        message = error["msg"]
        if error["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(Problem.at(target.pos, format_path(path), _lower_first(message)))
    return problems


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
