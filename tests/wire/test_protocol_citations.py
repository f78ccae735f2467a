"""Every ``§`` the code cites is a section (or a §13 item) of docs/wire-protocol.md.

RFC sections are written with the RFC's name in front (``RFC 6455 §5.2``) and are
not checked here; everything else is this project's wire specification.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "docs" / "wire-protocol.md"
CITATION = re.compile(r"(RFC \d+ |SPDY/3 draft, its )?§ ?(\d+(?:\.\d+)*)")


def spec_sections() -> set[str]:
    """Section numbers of the headings, plus ``13.N`` for each edge case of §13."""
    text = SPEC.read_text(encoding="utf-8")
    found = set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, flags=re.MULTILINE))
    part = text.split("\n## 13. ", 1)[1].split("\n## 14. ", 1)[0]
    found |= {f"13.{n}" for n in re.findall(r"^(\d+)\. ", part, flags=re.MULTILINE)}
    return found


def cited() -> dict[str, list[str]]:
    """Section number → where the code cites it."""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "pfcompose").rglob("*.py")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in CITATION.finditer(line):
                if match.group(1):
                    continue  # another document's section
                where = f"{path.relative_to(ROOT)}:{lineno}"
                out.setdefault(match.group(2), []).append(where)
    return out


def test_the_spec_has_its_numbered_sections() -> None:
    sections = spec_sections()
    assert {str(n) for n in range(1, 16)} <= sections
    assert {"3.1", "4.3", "6.5.1", "9.4", "11.2", "13.4", "13.22"} <= sections


def test_every_citation_names_a_section_of_the_spec() -> None:
    sections = spec_sections()
    citations = cited()
    assert len(citations) > 20  # the code does cite the spec
    missing = {n: where for n, where in citations.items() if n not in sections}
    assert not missing, f"cited but not in docs/wire-protocol.md: {missing}"
