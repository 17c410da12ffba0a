"""The one Markdown table writer of the report's .md files (verdict, Table 1, runs, allocation)."""
from __future__ import annotations


def markdown_table(header: list[str], rows) -> list[str]:
    """The lines of a GitHub-flavoured Markdown table: header, separator, one line per row of cells."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])
