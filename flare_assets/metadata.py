"""Turning plain results from flare_core into Dagster metadata values."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from flare_core.preview import png_markdown


def table(rows: Sequence[Mapping[str, Any]]) -> MetadataValue:
    """A metadata table from a list of flat dicts (columns from the first row)."""
    if not rows:
        return MetadataValue.table(records=[], schema=TableSchema(columns=[]))
    columns = list(rows[0].keys())
    schema = TableSchema(columns=[TableColumn(name=c, type=_column_type(rows[0][c])) for c in columns])
    records = [TableRecord({c: _plain(row.get(c)) for c in columns}) for row in rows]
    return MetadataValue.table(records=records, schema=schema)


def image(png: bytes, title: str) -> MetadataValue:
    return MetadataValue.md(png_markdown(png, title))


def _column_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
