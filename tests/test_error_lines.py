"""Error messages shown to people are one line, whatever the database driver appends (issue 16)."""

from __future__ import annotations

import asyncpg
import pytest

from ingest.errors import ConfluenceError, one_line


def driver_error(fields: dict[str, str]) -> BaseException:
    """An error built the way asyncpg builds one from the server's ErrorResponse fields."""
    return asyncpg.PostgresError.new({"S": "FATAL", **fields})


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        # What a database dropped mid-answer looks like: the server adds a DETAIL line.
        (driver_error({"C": "3D000", "M": 'database "askdocs" does not exist',
                       "D": "It seems to have just been dropped or renamed."}),
         'database "askdocs" does not exist'),
        (driver_error({"C": "23505", "M": 'duplicate key value violates unique constraint "pages_pkey"',
                       "D": "Key (page_id)=(42) already exists.", "H": "Check the page id."}),
         'duplicate key value violates unique constraint "pages_pkey"'),
        (ConfluenceError(503, "https://wiki.example.com/x", "Confluence answered 503: busy\nplease wait"),
         "Confluence answered 503: busy please wait (HTTP 503, GET https://wiki.example.com/x)"),
        (TimeoutError(), "TimeoutError"),
        ("  already one line  ", "already one line"),
    ],
)
def test_error_text_is_one_line_without_driver_details(error: BaseException | str, shown: str) -> None:
    assert "\n" in str(error) or not isinstance(error, asyncpg.PostgresError)
    assert one_line(error) == shown
