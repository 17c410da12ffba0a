"""One table printer for the benchmark scripts: a markdown table (for the READMEs) or aligned text."""
from __future__ import annotations

from beyondbp.report.markdown import markdown_table


def print_table(header: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("\n".join(markdown_table(header, rows)))
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
