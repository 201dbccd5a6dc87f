"""Writing a benchmark's results: its JSON and its Markdown table, side by side in the results folder."""

from pathlib import Path

import msgspec


def write_results(results_dir: Path, stem: str, report: msgspec.Struct, table: str) -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.md`` in ``results_dir``, each replaced whole (a reader never sees half a file)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{stem}.json", results_dir / f"{stem}.md"
    for path, content in (
        (json_path, msgspec.json.format(msgspec.json.encode(report))),
        (md_path, table.encode()),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
    return json_path, md_path
