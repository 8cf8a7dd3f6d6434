"""Results files: rows of a CSV and a run's JSON, written and read back.

A report is written from these files alone, so that `--report-only` rewrites
it without re-running: numbers must come back as the numbers written.
"""

from __future__ import annotations

import csv
import json
import pathlib
from collections.abc import Sequence
from typing import Any


def write_csv(
    path: pathlib.Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] = ()
) -> None:
    """Rows as CSV; the columns are `fields`, or every key in order of first
    appearance. A row lacking a column leaves it empty."""
    columns = list(fields) or list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=columns, restval="", extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)


def parse(text: str) -> Any:
    """A CSV cell as written: an int, a float (inf and nan too), else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path: pathlib.Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by `write_csv`, numbers parsed."""
    with path.open(newline="") as handle:
        return [
            {key: parse(value) for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]


def write_json(path: pathlib.Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")


def read_json(path: pathlib.Path) -> Any:
    return json.loads(path.read_text())
