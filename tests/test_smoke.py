import pytest
from mcp import Client

pytestmark = pytest.mark.anyio


async def test_smoke(client: Client) -> None:
    tools = await client.list_tools()
    print([t.name for t in tools.tools])
    result = await client.call_tool("naive_llm_chat", {"prompt": "hello"})
    print(result)
    result = await client.call_tool("naive_llm_chat", {"prompt": "hello", "temperature": 3, "bogus": 1})
    print(result)
    result = await client.call_tool("naive_llm_models", {"search": "claude"})
    print(result.content[0].text)
