"""NaiveClient's own HTTP client: made on the first upstream call, closed once, never reused."""

from __future__ import annotations

import pytest

from naive_mcp.caller import Caller
from naive_mcp.client import NaiveClient
from naive_mcp.sandbox import RunningSandbox
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


async def test_the_http_client_is_made_on_first_use_and_refused_after_close(
    sandbox: RunningSandbox, api_key: str
) -> None:
    client = NaiveClient(make_settings(sandbox, api_key))
    caller = Caller(api_key=api_key, user_id=None, project_id=None)
    assert await client.models(caller), "the first call makes the client and is answered"
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):  # httpx2's own refusal
        await client.models(caller)


async def test_a_client_closed_before_any_call_never_makes_one(sandbox: RunningSandbox, api_key: str) -> None:
    client = NaiveClient(make_settings(sandbox, api_key))
    await client.aclose()
    with pytest.raises(RuntimeError, match="after aclose"):
        await client.models(Caller(api_key=api_key, user_id=None, project_id=None))
