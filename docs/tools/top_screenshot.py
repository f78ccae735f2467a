"""Render what ``pfcompose top`` shows for a running project to SVG and PNG (docs/).

    python docs/tools/top_screenshot.py PROJECT SECONDS OUT.svg [OUT.png] [--details]

Subscribes like ``top`` does, applies SECONDS of pushed snapshots (so rates and the
sparkline are real), draws the same frame with rich and exports it: SVG by rich,
PNG by cairosvg (``pip install cairosvg``; needs the cairo library).
"""

from __future__ import annotations

import io
import sys

import trio
from rich.console import Console

from pfcompose.commands.topview import TopModel, connect_project, render_screen

WIDTH = 132
FONT = "DejaVu Sans Mono"


async def collect(project: str, seconds: float) -> TopModel:
    model = TopModel()
    conn, _, source = await connect_project(project)
    model.source = source
    try:
        answers = await conn.request("subscribe", interval=0.5)
        with trio.move_on_after(seconds):
            async for message in answers:
                if "snapshot" in message:
                    model.apply(message["snapshot"])
    finally:
        await conn.aclose()
    return model


def main() -> None:
    project, seconds, svg_path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    png_path = next((a for a in sys.argv[4:] if a.endswith(".png")), None)
    model = trio.run(collect, project, seconds)
    model.details = "--details" in sys.argv
    console = Console(record=True, width=WIDTH, file=io.StringIO(), force_terminal=True)
    console.print(render_screen(model, WIDTH))
    svg = console.export_svg(title="pfcompose top")
    with open(svg_path, "w", encoding="utf-8") as f:
        f.write(svg)
    if png_path:
        import cairosvg

        # cairo has no web fonts: the terminal font is a local monospace one.
        local = svg.replace("font-family: Fira Code, monospace;", f"font-family: {FONT};")
        cairosvg.svg2png(bytestring=local.encode(), write_to=png_path, output_width=WIDTH * 10)


if __name__ == "__main__":
    main()
