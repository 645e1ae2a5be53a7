"""Whose rows a query keeps: the conditions of a `UsageScope` on a table's key, user and project."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table

from naive_mcp.store.records import UsageScope


def within(table: Table, scope: UsageScope) -> list[ColumnElement[bool]]:
    """The conditions on `table`'s key, user and project columns that keep `scope`'s rows."""
    conditions: list[ColumnElement[bool]] = []
    if scope.key_digest is not None:
        conditions.append(table.c.key_digest == scope.key_digest)
    for column, wanted in ((table.c.user_id, scope.user), (table.c.project_id, scope.project)):
        if wanted is not None:
            conditions.append(column.is_(None) if wanted.value is None else column == wanted.value)
    return conditions
