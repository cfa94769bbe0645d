"""Every reference the code makes into docs/ resolves to a heading there, and nothing cites the unpublished spec."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("mova", "train", "ui")
# docs/model.md#anchor, optionally followed by more anchors of the same file: "docs/model.md#a, #b and #c"
REFERENCE = re.compile(r"docs/([\w./-]+\.md)#([\w-]+)((?:(?:,| and)\s*#[\w-]+)*)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", doc.read_text(), flags=re.M)}


def code_files() -> list[Path]:
    return [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*")) if p.suffix in {".py", ".yaml", ".md"}]


def references() -> list[tuple[str, int, str, str]]:
    """(file, line, doc, anchor) for every docs reference in the code."""
    found = []
    for path in code_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in REFERENCE.finditer(line):
                for anchor in [match.group(2), *re.findall(r"#([\w-]+)", match.group(3))]:
                    found.append((str(path.relative_to(ROOT)), number, match.group(1), anchor))
    return found


def test_slugs_follow_github():
    assert slug("Aligned RoPE") == "aligned-rope"
    assert slug("Quirks of the released code") == "quirks-of-the-released-code"
    assert slug("Video DiT config") == "video-dit-config"


def test_every_docs_reference_in_the_code_resolves_to_a_heading():
    refs = references()
    assert len(refs) > 80  # the code cites the model description throughout
    known = {doc.name: anchors(doc) for doc in (ROOT / "docs").glob("*.md")}
    broken = [f"{file}:{line}: docs/{doc}#{anchor}" for file, line, doc, anchor in refs
              if anchor not in known.get(doc, set())]
    assert not broken, "references without a heading in docs/:\n" + "\n".join(broken)


def test_a_misspelt_anchor_is_caught():
    assert "guidance" in anchors(ROOT / "docs" / "model.md")
    assert "guidanse" not in anchors(ROOT / "docs" / "model.md")


def test_no_code_cites_the_unpublished_spec():
    stale = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in code_files()
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\bspec §|shared/spec/mova-spec", line, flags=re.I)]
    assert not stale, "cite docs/model.md instead:\n" + "\n".join(stale)
