"""Shared by the benchmark scripts: replace (or append) one `## ` section of
docs/benchmarks.md, leaving the other benchmarks' sections as they are."""

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading, section):
    """`heading` is the start of the section's `## ` line; `section` its
    whole new text, heading included."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    start = text.find(f"## {heading}")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        rest = text[end + 1:] if end >= 0 else ""
        text = text[:start] + section.rstrip("\n") + ("\n\n" + rest if rest else "\n")
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text)
