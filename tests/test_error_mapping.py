"""error_from_response: the one place an upstream status becomes an error."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

import naive_mcp
from naive_mcp.errors import ArgumentError, NaiveError, error_from_response, parse_retry_after


def body(error: object) -> bytes:
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(
    ("status", "error", "kind", "retryable"),
    [
        (400, {"code": "invalid_input", "message": "m"}, "invalid_input", False),
        (401, {"code": "unauthorized", "message": "m"}, "unauthorized", False),
        (402, {"code": "insufficient_credits", "message": "m"}, "insufficient_credits", False),
        (
            402,
            {"code": "billing_blocked", "block_reason": "llm_routing_requires_payment"},
            "llm_routing_requires_payment",
            False,
        ),
        (403, {"code": "forbidden", "message": "m"}, "forbidden", False),
        (403, {"code": "key_subject_mismatch", "message": "m"}, "key_subject_mismatch", False),
        (404, {"code": "not_found", "message": "m"}, "not_found", False),
        (429, {"code": "rate_limited", "message": "m"}, "rate_limited", True),
        (502, {"code": "provider_error", "message": "m"}, "provider_error", True),
        (500, {"code": "not_configured", "message": "m"}, "not_configured", False),
        (503, {"code": "not_configured", "message": "m"}, "not_configured", False),
        # OpenRouter's shape: the code is the HTTP status.
        (408, {"code": 408, "message": "m"}, "request_timeout", True),
        (503, {"code": 503, "message": "m"}, "unavailable", True),
        (524, {"code": 524, "message": "m"}, "request_timeout", True),
        (529, {"code": 529, "message": "m"}, "overloaded", True),
        (500, {"code": 500, "message": "m"}, "provider_error", True),
        (418, {"code": "brand_new_kind", "message": "m"}, "invalid_input", False),
    ],
)
def test_status_and_code_map_to_a_kind(
    status: int, error: dict[str, object], kind: str, retryable: bool
) -> None:
    mapped = error_from_response(status, {}, body(error))
    assert (mapped.kind, mapped.status, mapped.retryable) == (kind, status, retryable)


def test_a_body_that_is_not_a_naive_error_is_described() -> None:
    mapped = error_from_response(
        502, {"content-type": "text/html; charset=utf-8"}, b"<html>\n<b>Bad</b></html>"
    )
    assert mapped.kind == "provider_error"
    assert (
        mapped.message
        == "the upstream answered HTTP 502 with a body that is not a Naive error (text/html): '<html> <b>Bad</b></html>'"
    )
    empty = error_from_response(503, {}, b"")
    assert empty.message == "the upstream answered HTTP 503 with an empty body"


def test_retry_after_in_seconds_or_as_a_date_is_capped() -> None:
    assert parse_retry_after("20") == 20
    assert parse_retry_after("100000") == 300
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 30
    mapped = error_from_response(
        429, {"retry-after": "20"}, body({"code": "rate_limited", "message": "slow"})
    )
    assert (
        mapped.describe()
        == "rate_limited (HTTP 429): slow\nSlow down and retry after the delay. Retry after 20 s."
    )


def test_an_upstream_hint_is_passed_on() -> None:
    mapped = error_from_response(
        400, {}, body({"code": "invalid_input", "message": "bad", "hint": "add messages"})
    )
    assert mapped.describe().endswith("Upstream hint: add messages")


def test_argument_errors_say_nothing_was_spent() -> None:
    assert "Nothing was sent upstream and no credits were spent." in ArgumentError("x: bad").describe()


def test_a_retry_after_date_in_minus_zero_zero_zero_zero_is_read_as_utc() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30)).replace("+0000", "-0000")
    assert later.endswith("-0000")
    assert 25 <= (parse_retry_after(later) or 0) <= 30
    mapped = error_from_response(
        429, {"retry-after": later}, body({"code": "rate_limited", "message": "slow"})
    )
    assert mapped.kind == "rate_limited" and mapped.retry_after is not None


def test_an_upstream_cannot_claim_one_of_our_own_kinds() -> None:
    mapped = error_from_response(504, {}, body({"code": "no_api_key", "message": "odd"}))
    assert mapped.kind == "provider_error"
    assert "NAIVE_API_KEY" not in mapped.describe()


def test_every_kind_the_server_raises_has_its_own_next_step() -> None:
    """A kind missing from the table would fall back to the upstream's generic advice ("retry
    shortly"), wrong for a job id that is not the caller's, say."""
    sources = Path(naive_mcp.__file__).parent.rglob("*.py")
    kinds = {kind for path in sources for kind in re.findall(r'kind="([a-z_]+)"', path.read_text())}
    generic = NaiveError("x", kind="upstream_error").next_step
    assert {"job_not_found", "too_many_jobs", "jobs_off", "thread_not_found"} <= kinds
    assert [kind for kind in sorted(kinds) if NaiveError("x", kind=kind).next_step == generic] == []
