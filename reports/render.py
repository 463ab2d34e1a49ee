"""A :class:`~fmmforge.reports.sections.Report` as one self-contained HTML page and as Markdown.

The HTML embeds its plots as base64 PNG and its style inline: no network, no script, readable
in any browser without fmmforge. The Markdown refers to the PNG files written beside it. Both
write every cell through fmmforge.reports.numbers.
"""

from __future__ import annotations

import base64
import html
import re

from fmmforge.reports.numbers import MISSING, display
from fmmforge.reports.sections import Report, Table

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1240px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.8em; margin-bottom: 0.1em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; color: #444; }
.subtitle { color: #666; margin-top: 0; }
.note { color: #444; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.5em 0 1.5em; }
.scroll { overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.long { white-space: normal; min-width: 14em; }
tbody tr:nth-child(even) { background: #fafafa; }
summary { cursor: pointer; }
summary h3 { display: inline; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
""".strip()


FOLDED_ROWS = 15  # an HTML table longer than this is folded (<details>), so the plots stay together


def _html_table(table: Table) -> str:
    headers, rows = display(table.frame)
    numeric = [all(NUMBER.match(row[i]) or row[i] == MISSING for row in rows) for i in range(len(headers))]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(_html_cell(c, n) for c, n in zip(row, numeric)) + "</tr>" for row in rows)
    grid = (f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody>\n</table></div>")
    if len(rows) > FOLDED_ROWS:
        return (f"<details>\n<summary><h3>{html.escape(table.title)} ({len(rows)} rows: click to show)</h3>"
                f"</summary>\n{grid}\n</details>")
    return f"<h3>{html.escape(table.title)}</h3>\n{grid}"


NUMBER = re.compile(r"^[-+]?(\d[\d.]*(e[-+]?\d+)?|nan|inf)$")


LONG_CELL = 32  # a text cell longer than this may wrap (the rest stay on one line)


def _html_cell(text: str, numeric: bool) -> str:
    """A cell; right-aligned when its whole column is numbers (a key/value table stays left-aligned)."""
    kind = ' class="num"' if numeric else ' class="long"' if len(text) > LONG_CELL else ""
    return f"<td{kind}>{html.escape(text)}</td>"


def to_html(report: Report) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(report.title)}</title>", f"<style>\n{STYLE}\n</style>", "</head>", "<body>",
             f"<h1>{html.escape(report.title)}</h1>", f'<p class="subtitle">{html.escape(report.subtitle)}</p>']
    for section in report.sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
        for fig in section.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f'<img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">')
        parts += [_html_table(t) for t in section.tables]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    headers, rows = display(table.frame)
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return f"**{table.title}**\n\n" + "\n".join(lines)


def to_markdown(report: Report) -> str:
    parts = [f"# {report.title}", "", report.subtitle, ""]
    for section in report.sections:
        parts += [f"## {section.title}", ""]
        for note in section.notes:
            parts += [note, ""]
        for fig in section.figures:
            parts += [f"![{fig.title}]({fig.name})", ""]
        for table in section.tables:
            parts += [markdown_table(table), ""]
    return "\n".join(parts)
