"""Files as context: `files` on chat and compare, `output_file` on chat, and the roots they live under.

Every test builds a real tree in tmp_path (a .gitignore, nested ones, a binary, symlinks in and
out, files past each limit) and calls through the in-memory MCP client against the sandbox,
whose recorded requests show what the upstream received.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ListRootsResult, Root, TextContent
from pydantic import FileUrl

from naive_mcp import context_files
from naive_mcp.context_files import FileLimits, FileRoots, output_target, read_files, write_output
from naive_mcp.errors import ArgumentError
from naive_mcp.sandbox import RunningSandbox
from naive_mcp.server import create_server
from naive_mcp.settings import Settings
from tests.conftest import NAIVE_MCP, SESSION_TIMEOUT, make_settings, upstream_env
from tests.helpers import text_of
from tests.remote import HttpServer, http_server

NOTHING_SENT = "Nothing was sent upstream and no credits were spent."
SECRET = "the-secret-outside-the-root"

pytestmark = pytest.mark.anyio


def texts(result: CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, texts(result)
    assert result.structured_content is not None
    return result.structured_content


def chats(sandbox: RunningSandbox, api_key: str) -> list[dict[str, Any]]:
    return [
        record.body
        for record in sandbox.sandbox.ledger.requests(api_key)
        if record.path.endswith("/chat/completions")
    ]


def sent_text(body: dict[str, Any]) -> str:
    return json.dumps(body["messages"], ensure_ascii=False)


def refused(result: CallToolResult, *named: str) -> str:
    assert result.is_error
    text = text_of(result)
    assert NOTHING_SENT in text, text
    for name in named:
        assert name in text, text
    return text


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A project: some source, what git ignores, a binary, symlinks in and out, one big file."""
    root = tmp_path / "project"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "build").mkdir()
    (root / ".git").mkdir()
    (root / ".gitignore").write_text("*.log\nbuild/\n.env\n")
    (root / "README.md").write_text("# Demo\nA demo project.\n")
    (root / "src" / "app.py").write_text("print('app')\n")
    (root / "src" / "util.py").write_text("def util():\n    return '```'\n")
    (root / "src" / "pkg" / ".gitignore").write_text("generated.py\n")
    (root / "src" / "pkg" / "mod.py").write_text("MOD = 1\n")
    (root / "src" / "pkg" / "generated.py").write_text("GENERATED = 1\n")
    (root / "debug.log").write_text("log line\n")
    (root / ".env").write_text("TOKEN=do-not-send\n")
    (root / "build" / "out.py").write_text("OUT = 1\n")
    (root / ".git" / "config").write_text("[core]\n")
    (root / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01")
    (root / "latin.txt").write_bytes(b"caf\xe9\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in").symlink_to(root / "README.md")
    return root


def settings_for(sandbox: RunningSandbox, api_key: str, *roots: Path, **overrides: Any) -> Settings:
    return make_settings(sandbox, api_key, file_roots=[str(root) for root in roots], **overrides)


async def chat(settings: Settings, **arguments: Any) -> CallToolResult:
    async with Client(create_server(settings)) as client:
        return await client.call_tool("naive_llm_chat", {"prompt": "What is in these files?", **arguments})


# --- what is sent -------------------------------------------------------------------------------


async def test_named_files_and_globs_are_sent_first_each_fenced_under_its_path(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    result = await chat(settings_for(sandbox, api_key, tree), files=["README.md", "src/**/*.py"])

    data = structured(result)
    included = {entry["path"]: entry["bytes"] for entry in data["files"]["included"]}
    assert included == {
        "README.md": 23,
        "src/app.py": 13,
        "src/util.py": 29,
        "src/pkg/mod.py": 8,
    }
    # generated.py is ignored by src/pkg/.gitignore: nested .gitignore files count.
    assert data["files"]["skipped"] == [{"path": "src/pkg/generated.py", "reason": "ignored by .gitignore"}]
    assert "files 4 sent (73 bytes), 1 skipped (see files.skipped)" in texts(result)[-1]
    (body,) = chats(sandbox, api_key)
    first, question = body["messages"]
    assert first["role"] == "user" and question == {"role": "user", "content": "What is in these files?"}
    assert "README.md\n```\n# Demo\nA demo project.\n```" in first["content"]
    # A file that holds ``` is fenced by a longer run, so that it cannot end its own block.
    assert "src/util.py\n````\ndef util():\n    return '```'\n````" in first["content"]
    assert "GENERATED" not in first["content"]


async def test_binary_ignored_and_outward_symlinked_files_of_a_glob_are_skipped_with_the_reason(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    result = await chat(settings_for(sandbox, api_key, tree), files=["*"])

    data = structured(result)
    assert [entry["path"] for entry in data["files"]["included"]] == [".gitignore", "README.md"]
    reasons = {entry["path"]: entry["reason"] for entry in data["files"]["skipped"]}
    assert reasons == {
        ".env": "ignored by .gitignore",
        "debug.log": "ignored by .gitignore",
        "image.bin": "binary (it holds NUL bytes)",
        "latin.txt": "binary (not UTF-8 text)",
        "link_out": "is a symlink that leads outside the allowed roots: not read",
        "dir_out": "is a symlink that leads outside the allowed roots: not read",
    }
    # link_in is README.md again: sent once. Nothing under .git/, build/ or outside was read.
    sent = sent_text(chats(sandbox, api_key)[0])
    assert SECRET not in sent and "do-not-send" not in sent and "[core]" not in sent


async def test_a_directory_is_its_whole_tree_and_git_s_own_directory_is_never_read(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    result = await chat(settings_for(sandbox, api_key, tree), files=["src", ".git/config", ".git/*"])

    data = structured(result)
    assert [entry["path"] for entry in data["files"]["included"]] == [
        "src/app.py",
        "src/util.py",
        "src/pkg/.gitignore",
        "src/pkg/mod.py",
    ]
    assert data["files"]["skipped"] == [
        {"path": "src/pkg/generated.py", "reason": "ignored by .gitignore"},
        {"path": ".git/config", "reason": "in .git/, which is never read"},
        {"path": ".git/config", "reason": "in .git/, which is never read"},
    ]


def test_git_s_directory_in_any_case_is_never_read(tmp_path: Path) -> None:
    """On a case-insensitive disk (macOS, Windows) `.GIT/config` is `.git/config`."""
    (tmp_path / ".GIT").mkdir()
    (tmp_path / ".GIT" / "config").write_text("[core]\n")
    (tmp_path / "a.md").write_text("A\n")

    read = read_files(
        [".GIT/config", "**/*"],
        FileRoots((tmp_path,)),
        FileLimits(file_bytes=100, total_bytes=1000, count=10),
    )

    assert [(s.path, s.reason) for s in read.used.skipped] == [
        (".GIT/config", "in .git/, which is never read")
    ]
    assert [f.path for f in read.used.included] == ["a.md"]


async def test_a_symlink_inside_the_root_to_an_ignored_file_or_into_git_is_skipped_too(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    (tree / "notes.txt").symlink_to(tree / ".env")
    (tree / "gitdir").symlink_to(tree / ".git", target_is_directory=True)
    (tree / "buildlink").symlink_to(tree / "build", target_is_directory=True)
    files = ["notes.txt", "gitdir", "buildlink/out.py", "*.txt", "README.md"]

    data = structured(await chat(settings_for(sandbox, api_key, tree), files=files))

    assert [entry["path"] for entry in data["files"]["included"]] == ["README.md"]
    assert data["files"]["skipped"] == [
        {"path": "notes.txt", "reason": "leads through a symlink to .env, which .gitignore ignores"},
        {"path": "gitdir/config", "reason": "leads through a symlink into .git/, which is never read"},
        {
            "path": "buildlink/out.py",
            "reason": "leads through a symlink to build/out.py, which .gitignore ignores",
        },
        {"path": "latin.txt", "reason": "binary (not UTF-8 text)"},
    ]
    sent = sent_text(chats(sandbox, api_key)[0])
    assert "do-not-send" not in sent and "[core]" not in sent and "OUT = 1" not in sent


async def test_an_explicitly_named_ignored_file_is_skipped_too_and_alone_the_call_is_refused(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    # .env is where secrets live: naming it does not send it.
    result = await chat(settings_for(sandbox, api_key, tree), files=[".env", "build/out.py"])

    refused(result, "none of them could be sent", ".env: ignored by .gitignore", "build/out.py")
    assert chats(sandbox, api_key) == []


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("../outside/secret.txt", "leaves the allowed roots through `..`"),
        ("src/../../outside/secret.txt", "leaves the allowed roots through `..`"),
        ("src/*/../../../outside/*", "has `..` after a wildcard"),
        ("link_out", "leads outside the allowed roots through a symlink"),
        ("dir_out/secret.txt", "leads outside the allowed roots through a symlink"),
        ("dir_out/*.txt", "leads outside the allowed roots through a symlink"),
        ("missing.md", "does not exist"),
        ("src/**/*.rs", "matches no file"),
    ],
)
async def test_paths_that_leave_the_root_or_name_nothing_are_refused_by_name_unsent(
    sandbox: RunningSandbox, api_key: str, tree: Path, entry: str, says: str
) -> None:
    result = await chat(settings_for(sandbox, api_key, tree), files=["README.md", entry])

    text = refused(result, f"files: {entry!r}", says)
    assert SECRET not in text
    assert chats(sandbox, api_key) == []


async def test_an_absolute_path_outside_every_root_is_refused_and_one_inside_is_read(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    settings = settings_for(sandbox, api_key, tree)
    outside = str(tree.parent / "outside" / "secret.txt")
    refused(await chat(settings, files=[outside]), repr(outside), "is outside the allowed roots", str(tree))

    inside = await chat(settings, files=[str(tree / "README.md")])
    assert structured(inside)["files"]["included"] == [{"path": "README.md", "bytes": 23}]
    assert len(chats(sandbox, api_key)) == 1


async def test_relative_paths_start_at_the_first_root_and_a_second_root_is_readable_absolutely(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    other = tree.parent / "outside"
    result = await chat(
        settings_for(sandbox, api_key, tree, other), files=["README.md", str(other / "secret.txt")]
    )

    assert [entry["path"] for entry in structured(result)["files"]["included"]] == [
        "README.md",
        str(other / "secret.txt"),
    ]


# --- the limits ---------------------------------------------------------------------------------


async def test_a_file_past_the_per_file_limit_is_skipped_by_its_size_never_read(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    # A sparse 5 GiB file: reading it to find out would take minutes; its size says it at once.
    with (tree / "huge.txt").open("wb") as huge:
        huge.truncate(5 * 1024**3)
    (tree / "big.txt").write_text("x" * 2000)
    settings = settings_for(sandbox, api_key, tree, max_file_bytes=1000)

    result = await chat(settings, files=["README.md", "huge.txt", "big.txt"])

    skipped = structured(result)["files"]["skipped"]
    assert skipped == [
        {
            "path": "huge.txt",
            "reason": f"{5 * 1024**3} bytes, past 1000 per file (NAIVE_MAX_FILE_BYTES): not read",
        },
        {"path": "big.txt", "reason": "2000 bytes, past 1000 per file (NAIVE_MAX_FILE_BYTES): not read"},
    ]
    assert "xxxx" not in sent_text(chats(sandbox, api_key)[0])


async def test_files_past_the_total_are_skipped_and_the_rest_still_sent(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    for name in ("a", "b", "c"):
        (tree / "docs").mkdir(exist_ok=True)
        (tree / "docs" / f"{name}.md").write_text(name * 400)
    settings = settings_for(sandbox, api_key, tree, max_files_bytes=1000)

    data = structured(await chat(settings, files=["docs/*.md"]))

    assert [entry["path"] for entry in data["files"]["included"]] == ["docs/a.md", "docs/b.md"]
    (skip,) = data["files"]["skipped"]
    assert skip["path"] == "docs/c.md"
    assert "past 1000 bytes of files in all (NAIVE_MAX_FILES_BYTES)" in skip["reason"]


async def test_a_glob_over_many_files_stops_at_the_count_limit_and_says_so(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    many = tree / "many"
    many.mkdir()
    for number in range(60):
        (many / f"f{number:02}.txt").write_text(f"file {number}\n")
    settings = settings_for(sandbox, api_key, tree, max_files=5)

    data = structured(await chat(settings, files=["many/*.txt"]))

    assert [entry["path"] for entry in data["files"]["included"]] == [f"many/f{n:02}.txt" for n in range(5)]
    assert data["files"]["skipped"] == [
        {"path": "many/*.txt", "reason": "more matches past the 5-file limit (NAIVE_MAX_FILES): not read"}
    ]


@pytest.fixture
def walk_bound(monkeypatch: pytest.MonkeyPatch) -> int:
    """The walk bound, lowered (its 20,000 entries take seconds to make on a busy disk): the same
    code stops at it."""
    assert context_files.MAX_WALKED_ENTRIES == 20_000, "the README says 20,000"
    bound = 1_000
    monkeypatch.setattr(context_files, "MAX_WALKED_ENTRIES", bound)
    return bound


def test_a_walk_stops_after_a_bounded_number_of_entries_however_few_match(
    tmp_path: Path, walk_bound: int
) -> None:
    wide = tmp_path / "wide"
    wide.mkdir()
    for number in range(walk_bound + 10):
        (wide / f"{number}.dat").touch()
    (tmp_path / "a.md").write_text("A\n")

    read = read_files(
        ["a.md", "wide/*.md"], FileRoots((tmp_path,)), FileLimits(file_bytes=100, total_bytes=1000, count=10)
    )
    (skip,) = read.used.skipped
    assert skip.path == "wide" and f"stopped after {walk_bound} directory entries" in skip.reason


def test_the_walks_of_one_call_are_bounded_together_not_each(tmp_path: Path, walk_bound: int) -> None:
    wide = tmp_path / "wide"
    wide.mkdir()
    for number in range(walk_bound // 2):
        (wide / f"{number}.dat").touch()
    (tmp_path / "a.md").write_text("A\n")
    globs = [f"wide/{n}.da[t]" for n in range(8)]  # each walks all of wide/ for its one file

    read = read_files(
        ["a.md", *globs], FileRoots((tmp_path,)), FileLimits(file_bytes=100, total_bytes=1000, count=10)
    )

    assert {skip.path for skip in read.used.skipped} == {"wide"}
    assert all(f"stopped after {walk_bound} directory entries" in s.reason for s in read.used.skipped)
    assert len(read.used.skipped) == len(globs) - 2, "from the third glob on, each stops at once"


def test_a_fifo_is_skipped_without_being_opened_for_a_blocking_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "a.md").write_text("A\n")

    read = read_files(["*"], FileRoots((tmp_path,)), FileLimits(file_bytes=100, total_bytes=1000, count=10))

    assert [(s.path, s.reason) for s in read.used.skipped] == [("pipe", "not a regular file")]


def test_reading_with_no_roots_is_refused_with_the_reason_given(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError) as refusal:
        read_files(["a.md"], FileRoots((), off_because="no roots here"), FileLimits(1, 1, 1))
    assert refusal.value.kind == "files_off"


async def test_the_files_count_in_the_estimate_so_a_cap_refuses_the_call_they_push_over(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    (tree / "long.md").write_text("word " * 40_000)  # 200 kB: ~50,000 tokens
    settings = settings_for(sandbox, api_key, tree, max_call_credits=0.01, credits_per_usd=2.1)
    ask = {"model": "openai/gpt-5.2", "max_tokens": 10}

    fits = await chat(settings, **ask)
    too_big = await chat(settings, files=["long.md"], **ask)

    assert not fits.is_error, texts(fits)
    text = text_of(too_big)
    assert too_big.is_error and text.startswith("spending_cap: "), text
    assert "NAIVE_MAX_CALL_CREDITS" in text and NOTHING_SENT in text
    assert len(chats(sandbox, api_key)) == 1  # the call without files only


# --- where the roots come from ------------------------------------------------------------------


async def test_without_client_roots_or_settings_files_are_off_naming_both(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    result = await chat(make_settings(sandbox, api_key), files=[str(tree / "README.md")])

    text = refused(result, "no file roots", "NAIVE_FILE_ROOTS", "MCP roots")
    assert text.startswith("files: ")
    assert chats(sandbox, api_key) == []


def roots_callback(*paths: Path) -> Any:
    async def list_roots(context: ClientRequestContext) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl(path.as_uri()), name=path.name) for path in paths])

    return list_roots


async def test_the_client_s_mcp_roots_are_used_and_preferred_over_the_setting(
    sandbox: RunningSandbox, api_key: str, tree: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "README.md").write_text("the setting's readme\n")
    settings = settings_for(sandbox, api_key, elsewhere)

    # The 2025 protocols' roots/list: a request to the client in the middle of the call.
    async with Client(
        create_server(settings), list_roots_callback=roots_callback(tree), mode="legacy"
    ) as client:
        result = await client.call_tool("naive_llm_chat", {"prompt": "q", "files": ["README.md"]})
        outside = await client.call_tool(
            "naive_llm_chat", {"prompt": "q", "files": [str(elsewhere / "README.md")]}
        )

    assert structured(result)["files"]["included"] == [{"path": "README.md", "bytes": 23}]
    assert "A demo project." in sent_text(chats(sandbox, api_key)[0])
    # The client's roots replace the setting's: its directory is outside them now.
    refused(outside, f"is outside the allowed roots (the client's MCP roots: {tree})")


async def test_a_client_that_offers_no_roots_falls_back_on_the_setting(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    async with Client(
        create_server(settings_for(sandbox, api_key, tree)),
        list_roots_callback=roots_callback(),
        mode="legacy",
    ) as c:
        result = await c.call_tool("naive_llm_chat", {"prompt": "q", "files": ["README.md"]})

    assert structured(result)["files"]["included"] == [{"path": "README.md", "bytes": 23}]


async def test_on_the_2026_protocol_client_roots_are_not_asked_for_and_the_setting_decides(
    sandbox: RunningSandbox, api_key: str, tree: Path, tmp_path: Path
) -> None:
    asked = []

    async def list_roots(context: ClientRequestContext) -> ListRootsResult:
        asked.append(True)
        return ListRootsResult(roots=[Root(uri=FileUrl((tmp_path / "outside").as_uri()))])

    server = create_server(settings_for(sandbox, api_key, tree))
    async with Client(server, list_roots_callback=list_roots) as client:  # 2026-07-28: no back-channel
        result = await client.call_tool("naive_llm_chat", {"prompt": "q", "files": ["README.md"]})

    assert structured(result)["files"]["included"] == [{"path": "README.md", "bytes": 23}]
    assert asked == []


async def test_a_call_without_files_never_asks_the_client_for_its_roots(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    asked = []

    async def list_roots(context: ClientRequestContext) -> ListRootsResult:
        asked.append(True)
        return ListRootsResult(roots=[])

    async with Client(
        create_server(settings_for(sandbox, api_key, tree)), list_roots_callback=list_roots, mode="legacy"
    ) as c:
        structured(await c.call_tool("naive_llm_chat", {"prompt": "q"}))
        structured(await c.call_tool("naive_llm_chat", {"prompt": "q", "files": ["README.md"]}))

    assert asked == [True]


# --- compare, threads, the generic tool ---------------------------------------------------------


async def test_compare_sends_the_files_to_every_model_and_lists_them_once(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    async with Client(create_server(settings_for(sandbox, api_key, tree))) as client:
        result = await client.call_tool(
            "naive_llm_compare",
            {
                "prompt": "Review",
                "models": ["openai/gpt-5.2", "anthropic/claude-sonnet-4.6"],
                "files": ["src/app.py"],
            },
        )

    data = structured(result)
    assert data["files"]["included"] == [{"path": "src/app.py", "bytes": 13}]
    assert "files 1 sent (13 bytes)" in texts(result)[-1]
    bodies = chats(sandbox, api_key)
    assert len(bodies) == 2 and all("print('app')" in body["messages"][0]["content"] for body in bodies)


async def test_a_thread_keeps_the_files_as_they_were_sent(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    async with Client(create_server(settings_for(sandbox, api_key, tree))) as client:
        first = structured(
            await client.call_tool("naive_llm_chat", {"prompt": "Read it", "files": ["README.md"]})
        )
        (tree / "README.md").write_text("# Changed since\n")
        second = structured(
            await client.call_tool("naive_llm_chat", {"prompt": "And now?", "thread_id": first["thread_id"]})
        )

    assert "files" not in second
    later = chats(sandbox, api_key)[-1]
    # The thread holds the text the model read then, not what the file holds now.
    assert "A demo project." in sent_text(later) and "Changed since" not in sent_text(later)
    assert [message["content"] for message in later["messages"][1:]][-2:][-1] == "And now?"


async def test_files_past_what_a_thread_holds_are_answered_in_no_thread_saying_why(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    (tree / "long.md").write_text("line\n" * 400)
    result = await chat(settings_for(sandbox, api_key, tree, thread_max_chars=1000), files=["long.md"])

    data = structured(result)
    assert "thread_id" not in data
    assert any("in no thread" in note and "NAIVE_THREAD_MAX_CHARS" in note for note in data["notes"])


async def test_the_generic_tool_takes_files_as_the_typed_one_does(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    async with Client(create_server(settings_for(sandbox, api_key, tree))) as client:
        result = await client.call_tool(
            "naive_run_primitive",
            {"primitive": "llm", "method": "chat", "arguments": {"prompt": "q", "files": ["README.md"]}},
        )
        bad = await client.call_tool(
            "naive_run_primitive",
            {"primitive": "llm", "method": "chat", "arguments": {"prompt": "q", "files": ["../x"]}},
        )

    assert structured(result)["files"]["included"] == [{"path": "README.md", "bytes": 23}]
    refused(bad, "leaves the allowed roots")


# --- output_file --------------------------------------------------------------------------------


async def test_output_file_gets_the_whole_answer_and_the_result_its_path_and_beginning(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    settings = settings_for(sandbox, api_key, tree)
    result = await chat(settings, output_file="notes/answer.md", max_tokens=2000)

    data = structured(result)
    target = tree / "notes" / "answer.md"
    written = target.read_text()
    assert data["files"] == {
        "included": [],
        "skipped": [],
        "skipped_not_listed": 0,
        "output_file": str(target),
    }
    assert data["text_chars"] == len(written)
    assert written.startswith(data["text"]) and len(data["text"]) <= 500
    assert f"is written to {target}" in texts(result)[1]

    # An existing regular file is overwritten.
    again = structured(await chat(settings, output_file=str(target), prompt="Say something else."))
    assert target.read_text() != written and again["files"]["output_file"] == str(target)


async def test_an_output_file_the_disk_refuses_leaves_the_answer_in_the_result(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    # The disk refuses the write (EFBIG: past this process's file size limit, which Python's
    # ignored SIGXFSZ turns into an OSError): the answer, paid for, comes back whole instead.
    import resource

    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8, before[1]))
    try:
        result = await chat(settings_for(sandbox, api_key, tree), output_file="big.md", max_tokens=2000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)

    data = structured(result)
    assert not result.is_error
    assert (
        "could not write output_file" in " ".join(data["notes"]) and "the answer is here" in texts(result)[-1]
    )
    assert data["text"].startswith("Sandbox reply") and "output_file" not in (data.get("files") or {})


def test_an_answer_with_a_lone_surrogate_is_written_as_a_replacement_character(tmp_path: Path) -> None:
    write_output(output_target("a.md", FileRoots((tmp_path,))), "ok \ud800 ok")
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == "ok \ufffd ok"


def test_missing_directories_are_made_and_one_swapped_for_a_symlink_since_the_check_is_not_followed(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "notes").mkdir(parents=True)
    outside.mkdir()
    made = output_target("new/deeper/answer.md", FileRoots((root,)))
    swapped = output_target("notes/answer.md", FileRoots((root,)))
    # Put there after the check (the answer takes minutes to come): notes/ now leads outside.
    (root / "notes").rmdir()
    (root / "notes").symlink_to(outside, target_is_directory=True)

    write_output(made, "the answer")
    with pytest.raises(OSError, match=r"symbolic links|Not a directory"):
        write_output(swapped, "the answer")

    assert (root / "new" / "deeper" / "answer.md").read_text() == "the answer"
    assert list(outside.iterdir()) == [], "nothing was written through the symlink"


def test_a_fifo_put_where_the_answer_goes_is_not_written_and_nothing_waits_for_it(tmp_path: Path) -> None:
    # Put there after output_target checked the path (the answer takes minutes to come): opening
    # it to write would wait for a reader for ever, in the worker thread the call waits on.
    target = output_target("answer.md", FileRoots((tmp_path,)))
    fifo = tmp_path / "answer.md"
    os.mkfifo(fifo)
    failed: list[OSError] = []

    def write() -> None:
        try:
            write_output(target, "the answer")
        except OSError as exc:
            failed.append(exc)

    writing = threading.Thread(target=write, daemon=True)
    writing.start()
    writing.join(10)
    waited = writing.is_alive()
    if waited:  # it waits for a reader: one comes and goes, so that the thread ends
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writing.join(10)
    assert not waited and failed, "the write waited for a reader"
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # with a reader it is refused as well
    try:
        with pytest.raises(OSError, match="not a regular file"):
            write_output(target, "the answer")
    finally:
        os.close(reader)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("../outside/answer.md", "leaves the allowed roots through `..`"),
        ("link_out", "is a symlink"),
        ("link_in", "is a symlink"),
        ("dir_out/answer.md", "leads outside the allowed roots through a symlink"),
        ("src", "exists and is not a regular file"),
        ("src/", "names a directory"),
        ("README.md/answer.md", "has a file where a directory goes"),
        (".git/config", "is in .git/"),
        (".git/hooks/pre-commit", "is in .git/"),
        ("src/.git", "is in .git/"),
        ("gitdir/config", "is in .git/"),
        ("gitdir/hooks/post-checkout", "is in .git/"),
    ],
)
async def test_output_file_outside_the_roots_or_through_a_symlink_is_refused_unsent(
    sandbox: RunningSandbox, api_key: str, tree: Path, entry: str, says: str
) -> None:
    (tree / "gitdir").symlink_to(tree / ".git", target_is_directory=True)
    result = await chat(settings_for(sandbox, api_key, tree), output_file=entry)

    refused(result, f"output_file: {entry!r}", says)
    assert chats(sandbox, api_key) == []
    assert (tree / ".git" / "config").read_text() == "[core]\n"
    assert [path.name for path in (tree / ".git").iterdir()] == ["config"]
    assert not (tree / "src" / ".git").exists()
    assert (tree.parent / "outside" / "secret.txt").read_text() == SECRET
    assert not (tree.parent / "outside" / "answer.md").exists()


async def test_output_file_at_an_absolute_path_outside_is_refused(
    sandbox: RunningSandbox, api_key: str, tree: Path, tmp_path: Path
) -> None:
    target = str(tmp_path / "answer.md")
    refused(
        await chat(settings_for(sandbox, api_key, tree), output_file=target), "is outside the allowed roots"
    )
    assert not (tmp_path / "answer.md").exists()


async def test_output_file_without_roots_is_off(
    sandbox: RunningSandbox, api_key: str, tmp_path: Path
) -> None:
    result = await chat(make_settings(sandbox, api_key), output_file=str(tmp_path / "a.md"))
    refused(result, "output_file: no file roots", "NAIVE_FILE_ROOTS")


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"files": "README.md"}, "files"),
        ({"files": []}, "files"),
        ({"files": [1]}, "files[0]"),
        ({"files": [""]}, "files[0]"),
        ({"files": ["a\x00b"]}, "files[0]"),
        ({"files": ["a\nb"]}, "files[0]"),
        ({"files": ["a" * 4097]}, "files[0]"),
        ({"files": [f"f{n}" for n in range(65)]}, "files"),
        ({"files": ["a.md", "a.md"]}, "more than once"),
        ({"files": {"path": "a"}}, "files"),
        ({"output_file": ""}, "output_file"),
        ({"output_file": "a\x00b"}, "output_file"),
        ({"output_file": "x" * 4097}, "output_file"),
        ({"output_file": ["a.md"]}, "output_file"),
    ],
    ids=lambda value: json.dumps(value)[:40] if isinstance(value, dict) else value,
)
async def test_bad_files_and_output_file_values_get_a_clear_error_unsent(
    sandbox: RunningSandbox, api_key: str, tree: Path, arguments: dict[str, Any], says: str
) -> None:
    result = await chat(settings_for(sandbox, api_key, tree), **arguments)

    text = refused(result, says)
    assert text.startswith("Invalid arguments for naive_llm_chat"), text
    assert chats(sandbox, api_key) == []


async def test_a_name_too_long_for_the_disk_is_refused_by_name_not_a_crash(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    long_name = "n" * 300  # within the argument's 4,096 characters, past a file system's 255 a name
    settings = settings_for(sandbox, api_key, tree)

    refused(
        await chat(settings, files=[long_name]), f"files: {long_name!r} cannot be used (File name too long)"
    )
    refused(await chat(settings, output_file=f"{long_name}/a.md"), "output_file: ", "cannot be used")
    assert chats(sandbox, api_key) == []


async def test_compare_refuses_bad_files_and_takes_no_output_file(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    models = ["openai/gpt-5.2", "anthropic/claude-sonnet-4.6"]
    async with Client(create_server(settings_for(sandbox, api_key, tree))) as client:
        bad = await client.call_tool(
            "naive_llm_compare", {"prompt": "q", "models": models, "files": ["a\x00"]}
        )
        out = await client.call_tool(
            "naive_llm_compare", {"prompt": "q", "models": models, "output_file": "a"}
        )

    refused(bad, "files[0]")
    refused(out, "output_file")
    assert chats(sandbox, api_key) == []


def test_file_roots_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="is not an absolute path"):
        Settings(file_roots=["relative/dir"], store="memory")
    assert Settings(file_roots="/a,/b", store="memory").file_roots == ["/a", "/b"]


# --- over HTTP ----------------------------------------------------------------------------------


@asynccontextmanager
async def over_http(server: HttpServer, *roots: Path) -> AsyncIterator[Client]:
    """A 2025-era client over streamable HTTP that offers `roots` (a stateful session, so the
    server could ask for them mid-call: it must not trust them)."""
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=300)) as http,
        Client(
            streamable_http_client(server.url, http_client=http),
            mode="legacy",
            list_roots_callback=roots_callback(*roots),
        ) as client,
    ):
        yield client


@pytest.mark.slow
async def test_over_http_files_are_off_without_the_setting_and_client_roots_do_not_turn_them_on(
    sandbox: RunningSandbox, api_key: str, tree: Path, tmp_path: Path
) -> None:
    with http_server(tmp_path, upstream_env(sandbox, api_key)) as server:
        async with over_http(server, tree) as client:
            files = await client.call_tool(
                "naive_llm_chat", {"prompt": "q", "files": [str(tree / "README.md")]}
            )
            output = await client.call_tool(
                "naive_llm_chat", {"prompt": "q", "output_file": str(tree / "a.md")}
            )

    refused(files, "files: reading and writing files is off over HTTP", "NAIVE_FILE_ROOTS")
    refused(output, "output_file: reading and writing files is off over HTTP")
    assert chats(sandbox, api_key) == []
    assert not (tree / "a.md").exists()


@pytest.mark.slow
async def test_over_http_the_operator_s_roots_are_the_only_roots(
    sandbox: RunningSandbox, api_key: str, tree: Path, tmp_path: Path
) -> None:
    env = {**upstream_env(sandbox, api_key), "NAIVE_FILE_ROOTS": str(tree)}
    outside = tmp_path / "outside"
    with http_server(tmp_path, env) as server:
        async with over_http(server, outside) as client:
            read = await client.call_tool("naive_llm_chat", {"prompt": "q", "files": ["README.md"]})
            theirs = await client.call_tool(
                "naive_llm_chat", {"prompt": "q", "files": [str(outside / "secret.txt")]}
            )

    assert structured(read)["files"]["included"] == [{"path": "README.md", "bytes": 23}]
    assert "A demo project." in sent_text(chats(sandbox, api_key)[0])
    refused(theirs, f"is outside the allowed roots (NAIVE_FILE_ROOTS: {tree})")
    assert len(chats(sandbox, api_key)) == 1


# --- the terminal -------------------------------------------------------------------------------


def terminal(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NAIVE_MCP), *args],
        capture_output=True,
        text=True,
        timeout=SESSION_TIMEOUT,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **env},
    )


@pytest.mark.slow
def test_the_terminal_reads_files_under_the_current_directory_and_writes_the_answer(
    sandbox: RunningSandbox, api_key: str, tree: Path
) -> None:
    env = upstream_env(sandbox, api_key)
    done = terminal(
        tree, env, "chat", "-f", "README.md", "--file", "src/*.py", "-o", "out/answer.md", "Review"
    )

    assert done.returncode == 0, done.stderr
    written = (tree / "out" / "answer.md").read_text()
    assert done.stdout.startswith(written[:100])
    assert f"is written to {tree / 'out' / 'answer.md'}" in done.stdout
    assert "files 3 sent (65 bytes)" in done.stderr
    assert "A demo project." in sent_text(chats(sandbox, api_key)[0])

    refused_here = terminal(
        tree, env, "compare", "-m", "a/b", "-m", "c/d", "-f", "../outside/secret.txt", "q"
    )
    assert refused_here.returncode == 2
    assert "files: '../outside/secret.txt' leaves the allowed roots through `..`" in refused_here.stderr
    assert len(chats(sandbox, api_key)) == 1
