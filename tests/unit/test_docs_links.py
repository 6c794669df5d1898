"""The documentation holds together: every relative link and anchor in README.md, docs/**/*.md and
bench/README.md resolves inside the repository, and README.md stays an entry page (short, with
the two commands a newcomer types near its top).

Only files are read; nothing is fetched. Links to other sites are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 200
COMMANDS_WITHIN_LINES = 20

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
# [text](target "title"), ![alt](target); the text may hold one level of brackets.
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def doc_files(root: Path) -> list[Path]:
    files = [root / "README.md", root / "bench" / "README.md"]
    files += sorted((root / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def _prose_lines(text: str, *, blank_code: bool = True) -> Iterator[tuple[int, str]]:
    """Numbered lines outside fenced code blocks, inline code spans blanked out if asked."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, _CODE_SPAN.sub("", line) if blank_code else line


def links(text: str) -> list[tuple[int, str]]:
    """Every link target (inline or reference definition) with its line number."""
    found: list[tuple[int, str]] = []
    for number, line in _prose_lines(text):
        found += [(number, m.group(1)) for m in _INLINE_LINK.finditer(line)]
        ref = _REFERENCE_DEF.match(line)
        if ref:
            found.append((number, ref.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped (but - and _),
    spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings, numbered as GitHub numbers repeated ones."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in _prose_lines(text, blank_code=False):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path, root: Path) -> list[str]:
    """What in ``page`` points nowhere: a missing file, or an anchor no heading of it has."""
    problems: list[str] = []
    text = page.read_text(encoding="utf-8")
    for number, target in links(text):
        if _EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}:{number}: {target}"
        try:
            rel = dest.relative_to(root).as_posix()
        except ValueError:
            problems.append(f"{where} (outside the repository)")
            continue
        if not dest.exists():
            problems.append(f"{where} (no such file)")
            continue
        if (
            fragment
            and dest.suffix == ".md"
            and fragment not in anchors(dest.read_text(encoding="utf-8"))
        ):
            problems.append(f"{where} (no heading #{fragment} in {rel})")
    return problems


# -- the checker itself ------------------------------------------------------------------------


def test_slug_follows_github() -> None:
    assert slug("What is proven here, and what is not") == "what-is-proven-here-and-what-is-not"
    assert slug("Benchmarks (`make bench`)") == "benchmarks-make-bench"
    assert slug("The contract (for clients outside this project)") == (
        "the-contract-for-clients-outside-this-project"
    )


def test_links_skip_code_and_find_references() -> None:
    text = (
        "See [a](a.md) and `[not](code.md)`.\n"
        "```\n[nor](fenced.md)\n```\n"
        "[ref]: b.md#part\n"
        "![img](pic.png) [web](https://example.org)\n"
    )
    assert [t for _, t in links(text)] == ["a.md", "b.md#part", "pic.png", "https://example.org"]


def test_repeated_headings_are_numbered() -> None:
    assert anchors("# A\n## Notes\n## Notes\n```\n# not a heading\n```\n") == {
        "a",
        "notes",
        "notes-1",
    }


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n## Known part\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/page.md#known-part) [self](#top) [gone](docs/gone.md)\n"
        "[nohead](docs/page.md#unknown) [out](../elsewhere.md)\n"
        "# Top\n"
    )
    problems = broken_links(tmp_path / "README.md", tmp_path)
    assert len(problems) == 3, problems
    assert "docs/gone.md (no such file)" in problems[0]
    assert "no heading #unknown" in problems[1]
    assert "outside the repository" in problems[2]


# -- the repository's pages --------------------------------------------------------------------


@pytest.mark.parametrize("page", doc_files(ROOT), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page, ROOT) == []


def test_the_pages_exist() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in doc_files(ROOT)}
    expected = {
        "README.md",
        "bench/README.md",
        "docs/contract.md",
        "docs/operations.md",
        "docs/dispatch.md",
        "docs/configuration.md",
    }
    assert expected <= names


def test_readme_is_an_entry_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    top = "\n".join(lines[:COMMANDS_WITHIN_LINES])
    assert "make demo" in top
    assert "make test" in top
