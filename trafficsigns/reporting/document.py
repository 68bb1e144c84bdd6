"""A report as data, rendered twice: self-contained HTML and Markdown beside its image files.

One structure for both, so they never disagree. The HTML embeds every image as base64 and carries its
CSS inline: no script, stylesheet or image is fetched, so it opens offline, mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from trafficsigns.core.fsutil import atomic_path, write_text


@dataclass
class Text:
    """A paragraph; `code` in backticks is set in monospace."""

    text: str


@dataclass
class Code:
    """Preformatted text (params, logs)."""

    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to highlight


@dataclass
class Figure:
    """A PNG file; `name` is its file name under the images folder (default: the source's)."""

    path: Path
    caption: str
    name: str = ""


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    folded: bool = False  # HTML: closed until clicked (<details>), for what supports rather than answers


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1340px; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin: 0.3em 0; border-bottom: 2px solid #ccc; }
h2 { font-size: 1.3em; margin: 1.2em 0 0.4em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
td { font-variant-numeric: tabular-nums; white-space: nowrap; } td.long { white-space: normal; }
th { background: #f2f2f2; }
td.best { background: #d9f2d9; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
nav ul { display: flex; flex-wrap: wrap; gap: 0.2em 1.2em; list-style: none; padding: 0; margin: 0.4em 0; }
code { background: #f2f2f2; padding: 0 0.2em; }
details > summary { cursor: pointer; } details > summary h2 { display: inline-block; border: none; }
"""


def write_document(title: str, sections: list[Section], html_path: Path, md_path: Path, images_dir: Path) -> None:
    """Copy the figures to `images_dir` (referenced by the Markdown), then write both documents."""
    figures = [b for s in sections for b in s.blocks if isinstance(b, Figure)]
    for figure in figures:
        figure.name = figure.name or figure.path.name
    names = [f.name for f in figures]
    if len(set(names)) != len(names):
        raise ValueError(f"two figures share a file name: {names}")
    with atomic_path(images_dir) as tmp:
        tmp.unlink()  # atomic_path made a placeholder file; the folder replaces it
        tmp.mkdir()
        for figure in figures:
            shutil.copyfile(figure.path, tmp / figure.name)
    write_text(md_path, to_markdown(title, sections, Path(os.path.relpath(images_dir, md_path.parent))))
    write_text(html_path, to_html(title, sections))


def to_markdown(title: str, sections: list[Section], images: Path) -> str:
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                out += [block.text, ""]
            elif isinstance(block, Code):
                out += ["```", block.text.rstrip("\n"), "```", ""]
            elif isinstance(block, Table):
                out += _markdown_table(block) + [""]
            elif isinstance(block, Figure):
                out += [f"![{block.caption}]({(images / block.name).as_posix()})", "", f"*{block.caption}*", ""]
    return "\n".join(out)


def _markdown_table(table: Table) -> list[str]:
    def cell(r: int, c: int, value) -> str:
        text = str(value).replace("|", "\\|")
        return f"**{text}**" if (r, c) in table.bold else text

    lines = ["| " + " | ".join(str(h) for h in table.header) + " |", "|" + " --- |" * len(table.header)]
    lines += ["| " + " | ".join(cell(r, c, v) for c, v in enumerate(row)) + " |" for r, row in enumerate(table.rows)]
    return lines


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def to_html(title: str, sections: list[Section]) -> str:
    toc = "".join(f'<li><a href="#{_anchor(s.title)}">{html.escape(s.title)}</a></li>' for s in sections)
    body = [f"<h1>{html.escape(title)}</h1>", f"<nav><ul>{toc}</ul></nav>"]
    for section in sections:
        heading = f'<h2 id="{_anchor(section.title)}">{html.escape(section.title)}</h2>'
        body.append(f"<details><summary>{heading}</summary>" if section.folded else heading)
        for block in section.blocks:
            if isinstance(block, Text):
                body.append(f"<p>{_inline(block.text)}</p>")
            elif isinstance(block, Code):
                body.append(f"<pre>{html.escape(block.text)}</pre>")
            elif isinstance(block, Table):
                body.append(_html_table(block))
            elif isinstance(block, Figure):
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                    f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
                )
        if section.folded:
            body.append("</details>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html_table(table: Table) -> str:
    """Short cells (numbers, names) never wrap; long ones (a sentence, a list of params) do."""

    def cell(r: int, c: int, value) -> str:
        text = str(value)
        classes = " ".join(name for name, on in (("best", (r, c) in table.bold), ("long", len(text) > 40)) if on)
        return f'<td class="{classes}">{_inline(text)}</td>' if classes else f"<td>{_inline(text)}</td>"

    head = "".join(f"<th>{_inline(str(h))}</th>" for h in table.header)
    rows = "".join(
        "<tr>" + "".join(cell(r, c, v) for c, v in enumerate(row)) + "</tr>" for r, row in enumerate(table.rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
