"""The one writer of the generated blocks in docs/ (tables between HTML-comment markers)."""

from __future__ import annotations

from pathlib import Path


def update_block(path: Path, text: str, start: str, end: str, heading: str = "") -> None:
    """Replace the text between the markers ``start`` and ``end`` of a Markdown file (appended,
    with its markers, where they are missing; a missing file starts with ``heading``)."""
    path = Path(path)
    doc = path.read_text() if path.exists() else heading
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
