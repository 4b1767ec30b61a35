"""Test helper: read back the markdown tables that ``backtrack_trl.study.report`` writes."""


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """Parse the first markdown table in ``text`` into rows keyed by header."""
    rows: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("|"):
            rows.append(line.strip())
        elif rows:  # the first table ended
            break
    if len(rows) < 2:
        raise ValueError("no markdown table found")
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = []
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            raise ValueError(f"row {line!r} has {len(cells)} cells, header has {len(header)}")
        out.append(dict(zip(header, cells)))
    return out
