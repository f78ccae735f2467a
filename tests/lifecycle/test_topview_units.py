"""``top``'s model and frame without a terminal: rates, sparkline, keys, health column."""

from __future__ import annotations

import io
import itertools
from typing import Any

from rich.console import Console

from pfcompose.commands.topview import TopModel, parse_keys, plain_lines, render_screen, sparkline


def _record(name: str, bytes_in: int, bytes_out: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "state": "ready", "status": "ready", "pod": f"{name}-0",
        "namespace": "default", "target": f"pod/{name}-0", "transport": "spdy",
        "fallback": None, "connections_open": 1, "connections_total": 3,
        "bytes_in": bytes_in, "bytes_out": bytes_out, "reconnects": 0, "last_error": None,
        "listening": [{"address": "127.0.0.1", "local": 8080, "remote": 80}],
        "results": {"ok": 2, "refused": 0, "reset": 0, "error": 0}, "healthy": None,
        "recent": [], **extra,
    }  # fmt: skip


def _text(model: TopModel, height: int | None = None) -> str:
    console = Console(file=io.StringIO(), width=140, force_terminal=False)
    console.print(render_screen(model, 140, height))
    return str(console.file.getvalue())  # type: ignore[attr-defined]


def test_rates_average_the_last_two_seconds() -> None:
    model = TopModel()
    for t, total in [(100.0, 0), (100.5, 1000), (101.0, 2000), (101.5, 3000), (102.0, 4000)]:
        model.apply({"project": "p", "time": t, "forwards": [_record("a", total, total // 2)]})
    view = model.forwards["a"]
    assert view.rates() == (2000.0, 1000.0)  # 4000 B in over 2 s, 2000 B out
    per_second = view.per_second(102.0, width=4)
    assert per_second == [0.0, 0.0, 3000.0, 3000.0]  # (in + out) per second, oldest first
    assert plain_lines(model)[0].endswith(
        "a state=ready pod=a-0 transport=spdy conns=1/3 in=2000B/s out=1000B/s "
        "bytes_in=4000 bytes_out=2000 reconnects=0"
    )


def test_sparkline_scales_to_the_peak() -> None:
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([0, 1, 2, 4, 8]) == "▁▂▃▅█"


def test_keys() -> None:
    assert parse_keys(b"\x1b[A\x1b[Bq\r\x1bj") == ["up", "down", "q", "enter", "esc", "j"]
    assert parse_keys(b"\x1b[C") == []  # right arrow: ignored


def test_health_column_only_when_known_and_footer_totals() -> None:
    model = TopModel(project="p")
    model.apply({"project": "p", "time": 1.0, "forwards": [_record("a", 10, 20)]})
    assert "HEALTH" not in _text(model)
    model.apply({"project": "p", "time": 2.0, "forwards": [
        _record("a", 10, 20, healthy=False), _record("b", 1, 2)]})  # fmt: skip
    text = _text(model)
    assert "HEALTH" in text and "unhealthy" in text
    assert "TOTAL  2 forwards, 2 ready  ·  conns 2/6" in text
    assert "11 B in, 22 B out" in text


def test_details_fit_the_terminal() -> None:
    recent = [{"peer": f"127.0.0.1:{4000 + i}", "local": 8080, "started": 0.0, "duration": 0.01,
               "bytes_in": i, "bytes_out": i, "result": "ok", "reason": "local close"}
              for i in range(20)]  # fmt: skip
    model = TopModel(project="p", details=True)
    model.apply({"project": "p", "time": 1.0, "forwards": [_record("a", 1, 1, recent=recent)]})
    text = _text(model, height=26)
    assert "127.0.0.1:4019" in text and "127.0.0.1:4014" in text  # newest first
    assert "127.0.0.1:4013" not in text  # 26 lines leave room for 6
    assert len(text.splitlines()) <= 25  # and a status line


async def test_subscribe_pushes_at_most_four_times_a_second(autojump_clock: Any) -> None:
    import trio

    from pfcompose.up.observe import subscribe

    pushed: list[float] = []

    async def send(message: Any) -> None:
        assert set(message) == {"snapshot"}
        pushed.append(trio.current_time())

    result = await subscribe("p", list, dict, {"interval": 0.01, "count": 5}, send, trio.Event())
    assert result == {"pushed": 5}
    gaps = [b - a for a, b in itertools.pairwise(pushed)]
    assert gaps == [0.25] * 4  # asked for 100/s: clamped to 4/s


class _Nursery:
    """Records what ``_handle_key`` starts (a restart) instead of running it."""

    def __init__(self) -> None:
        self.started: list[tuple[Any, ...]] = []

    def start_soon(self, fn: Any, *args: Any) -> None:
        self.started.append((fn, *args))


def test_each_key_of_the_view() -> None:
    from pfcompose.commands.topview import _handle_key

    model = TopModel(project="p")
    forwards = [_record(name, 0, 0) for name in "abc"]
    model.apply({"project": "p", "time": 1.0, "forwards": forwards})
    nursery, restart = _Nursery(), object()

    def press(*keys: str) -> bool:
        return any([_handle_key(model, key, nursery, restart) for key in keys])  # type: ignore[arg-type]

    assert not press("down", "down") and model.current is not None and model.current.name == "c"
    assert not press("down") and model.current.name == "a"  # wraps
    assert not press("up") and model.current.name == "c"  # ↑ wraps back
    assert not press("k", "j", "up") and model.current.name == "b"
    assert not press("enter") and model.details
    assert not press("esc") and not model.details
    assert not press("r") and model.confirm == "b" and "Restart forward b? [y/N]" in _text(model)
    assert not press("n") and model.confirm is None and model.message == "restart cancelled"
    assert not press("r", "q") and model.message == "restart cancelled"  # q answers "no", not quit
    assert nursery.started == []
    assert not press("r", "y") and nursery.started == [(restart, "b")]
    assert model.message == "restarting b…"
    assert press("q")
