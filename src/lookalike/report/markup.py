"""HTML building blocks of the report: escaped text, tables, notes and inline images."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any


def escape(value: Any) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value), quote=True)


def image_tag(data: bytes, mime: str = "image/png", alt: str = "") -> str:
    """An ``<img>`` with ``data`` inlined as a base64 data URI."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:{mime};base64,{encoded}" alt="{escape(alt)}">'


def format_value(value: Any) -> str:
    """Numbers with four decimals (integers as they are), anything else as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    whole = isinstance(value, float) and value.is_integer() and abs(value) > 1
    if isinstance(value, int) or whole:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    table_id: str | None = None,
    bold: Sequence[Sequence[bool]] | None = None,
) -> str:
    """An HTML table; numeric cells are right-aligned, ``bold[i][j]`` marks cells in bold."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            classes = []
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                classes.append("num")
            if bold is not None and bold[i][j]:
                classes.append("best")
            attribute = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attribute}>{escape(format_value(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    identifier = f' id="{escape(table_id)}"' if table_id else ""
    return (
        f"<table{identifier}><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def note(text: str) -> str:
    """A paragraph saying what is absent or how something was computed."""
    return f'<p class="note">{escape(text)}</p>'
