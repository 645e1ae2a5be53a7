"""The terminal face: `naive-mcp chat`, `compare`, `models`, `generation`, `usage`.

Each command runs the same registry method as its tool (`Method.invoke`: the same validation,
caps, spend guard and errors), as the operator (the grant of stdio), and prints what the tool
would return: the text blocks, or with `--json` the structured content. A failure prints the
tool's error text on stderr. Exit status: 0 done, 1 the call failed, 2 bad usage, arguments or
settings (nothing was sent), 130 interrupted (Ctrl-C stops the call, and so the upstream), 141
stdout closed by its reader (`| head`: that stops the call too).

Every server setting works here too, from the environment (NAIVE_*) or as a flag
(`--sandbox`, `--store PATH`, `--base-url URL`, …; see `naive-mcp --help`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from naive_mcp.access import Grant
from naive_mcp.cli import read_settings, refuse_secret_flags, sandboxed
from naive_mcp.context_files import AskRoots, FileRoots, settings_roots
from naive_mcp.errors import NaiveError
from naive_mcp.logs import configure_logging
from naive_mcp.primitives.llm import CHAT, COMPARE, GENERATION, MODELS
from naive_mcp.primitives.llm.chat import ChatResult
from naive_mcp.progress import ProgressReporter
from naive_mcp.redaction import Redactor
from naive_mcp.registry import CallContext, Method, MethodResult
from naive_mcp.services import Services
from naive_mcp.settings import Settings
from naive_mcp.streaming import ChatStream
from naive_mcp.usage import usage_snapshot

OK, FAILED, BAD_USAGE, INTERRUPTED = 0, 1, 2, 130
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away
# Failures that are the command line's or the settings' own: nothing was sent upstream.
_USAGE_KINDS = frozenset({"invalid_arguments", "no_api_key", "no_model", "file_refused", "files_off"})
# What to do next, said to a person at a terminal rather than to an MCP client's model.
_TERMINAL_STEPS = {
    "no_api_key": "export NAIVE_API_KEY=… (your Naive API key) and run the command again, or add "
    "--sandbox to try it against the built-in sandbox (no key, no network, no spend).",
    "no_model": "Pass -m MODEL (e.g. anthropic/claude-sonnet-4.6; `naive-mcp models` lists them), "
    "or export NAIVE_DEFAULT_MODEL.",
}
# Read from the environment only (cli.read_settings says why): never a flag here either.
_NOT_FLAGS = frozenset({"api_key", "auth_tokens"})

Work = Callable[[Services], Awaitable[int]]


# --- the commands ------------------------------------------------------------------------------


def chat(argv: list[str]) -> int:
    parser = _parser("chat", "Ask a model. The answer streams to stdout; a summary line goes to stderr.")
    parser.add_argument("prompt", nargs="?", help="the prompt; - reads it from stdin")
    parser.add_argument("-m", "--model", help="e.g. anthropic/claude-sonnet-4.6 (else NAIVE_DEFAULT_MODEL)")
    parser.add_argument(
        "--fallback", action="append", metavar="MODEL", help="a model to fall back on; repeat for a chain"
    )
    parser.add_argument(
        "-o", "--output-file", metavar="PATH", help="write the answer to this file; print its beginning"
    )
    _conversation_options(parser, more="tools, response_format, provider, …")
    args = _parse(parser, argv)
    more, prompt = _more_and_prompt(parser, args)

    async def work(services: Services) -> int:
        model = args.model
        if args.fallback and model is None:
            model = services.settings.default_model  # the chain starts at the default model
        raw = more | _conversation(args, prompt) | _given(model=model, models=args.fallback)
        raw |= _given(output_file=args.output_file)
        if args.json:
            return await _print_result(services, CHAT, raw, as_json=True)
        if args.output_file:  # the answer goes to the file: its beginning and where it is, here
            written = await _call(services, CHAT, raw)
            if isinstance(written, int):
                return written
            *blocks, summary = [block for block in written.content() if isinstance(block, str)]
            sys.stdout.write("\n".join(blocks) + "\n")
            sys.stdout.flush()
            sys.stderr.write(summary + "\n")
            return OK
        echo = _Echo(sys.stdout, services.redact)
        result = await _call(services, CHAT, raw, on_chunk=echo)
        if isinstance(result, int):
            echo.end_line()  # of the part that arrived before the call failed
            return result
        assert isinstance(result, ChatResult)
        echo.finish(result.text)
        for block in result.content()[1 if result.text else 0 : -1]:  # tool calls, images' notes
            if isinstance(block, str):  # an image block's base64 is no use on a terminal
                sys.stdout.write(block + "\n")
        sys.stdout.flush()
        sys.stderr.write(result.summary() + "\n")
        shown = [image for image in result.images if image.block is not None]
        if shown:
            kinds = ", ".join(f"{image.mime_type} {image.size_bytes} bytes" for image in shown)
            sys.stderr.write(f"{len(shown)} image(s) came with the answer ({kinds}); --json has their data\n")
        return OK

    return _run(args.settings, work)


def compare(argv: list[str]) -> int:
    parser = _parser(
        "compare",
        "Ask 2-8 models the same question at once. The answers print numbered, side by side (each "
        "once it is whole: several streams at once would interleave), then the judge's synthesis "
        "if one was asked for; a summary line goes to stderr.",
    )
    parser.add_argument("prompt", nargs="?", help="the prompt; - reads it from stdin")
    parser.add_argument(
        "-m", "--model", action="append", metavar="MODEL", help="a model to ask; repeat it, 2 to 8 times"
    )
    parser.add_argument(
        "--judge", metavar="MODEL", help="a model that then writes a synthesis citing the answers"
    )
    _conversation_options(parser, more="messages, top_p, seed, provider, extra")
    args = _parse(parser, argv)
    more, prompt = _more_and_prompt(parser, args)
    raw = more | _conversation(args, prompt) | _given(models=args.model, judge=args.judge)

    async def work(services: Services) -> int:
        if args.json:
            return await _print_result(services, COMPARE, raw, as_json=True)
        result = await _call(services, COMPARE, raw)
        if isinstance(result, int):
            return result
        *answers, summary = [block for block in result.content() if isinstance(block, str)]
        sys.stdout.write("\n\n".join(answers) + "\n")
        sys.stdout.flush()
        sys.stderr.write(summary + "\n")
        return OK

    return _run(args.settings, work)


def models(argv: list[str]) -> int:
    parser = _parser("models", "Find a model: words to search for in id or name, filters, sorted and paged.")
    parser.add_argument("search", nargs="?", help="words that must all appear in the id or name")
    parser.add_argument("--author", help="e.g. anthropic, openai")
    parser.add_argument("--sort", help="id (default), price (cheapest first) or context (largest first)")
    parser.add_argument("--limit", help="how many (1-100, default 20)")
    parser.add_argument("--offset")
    parser.add_argument("--min-context", help="minimum context length, in tokens")
    parser.add_argument("--max-prompt-price", help="USD per million input tokens")
    parser.add_argument("--max-completion-price", help="USD per million output tokens")
    parser.add_argument("--input-modality", help="one it takes: text, image, audio, file or video")
    parser.add_argument("--output-modality", help="one it gives: text, image, audio or embeddings")
    parser.add_argument("--supported-parameter", help="a request parameter it takes, e.g. tools, reasoning")
    parser.add_argument(
        "--free",
        action=argparse.BooleanOptionalAction,
        help="only models that cost nothing (--no-free: only priced ones)",
    )
    parser.add_argument("--user-id")
    parser.add_argument("--project-id")
    args = _parse(parser, argv)
    raw = _given(
        search=args.search,
        author=args.author,
        sort=args.sort,
        limit=args.limit,
        offset=args.offset,
        min_context=args.min_context,
        max_prompt_price=args.max_prompt_price,
        max_completion_price=args.max_completion_price,
        input_modality=args.input_modality,
        output_modality=args.output_modality,
        supported_parameter=args.supported_parameter,
        free=args.free,
        user_id=args.user_id,
        project_id=args.project_id,
    )
    return _run(args.settings, lambda services: _print_result(services, MODELS, raw, as_json=args.json))


def generation(argv: list[str]) -> int:
    parser = _parser("generation", "What an earlier chat call cost and how it ran, by its id (gen-…).")
    parser.add_argument("id", help="the generation id a chat result gave")
    parser.add_argument("--user-id")
    parser.add_argument("--project-id")
    args = _parse(parser, argv)
    raw = _given(id=args.id, user_id=args.user_id, project_id=args.project_id)
    return _run(args.settings, lambda services: _print_result(services, GENERATION, raw, as_json=args.json))


def usage(argv: list[str]) -> int:
    parser = _parser(
        "usage",
        "What the store (NAIVE_STORE) has recorded: calls, tokens, USD and credits, for all time, "
        "today and this month (UTC); every process on that store counts.",
    )
    args = _parse(parser, argv)

    async def work(services: Services) -> int:
        snapshot = await usage_snapshot(await services.guard.store())
        sys.stdout.write(json.dumps(snapshot, indent=2) + "\n" if args.json else _usage_text(snapshot))
        return OK

    return _run(args.settings, work)


# --- running a method, as the tools do -----------------------------------------------------------


async def _call(
    services: Services,
    method: Method[Any, Any],
    raw: dict[str, Any],
    on_chunk: Callable[[ChatStream], None] | None = None,
) -> MethodResult | int:
    """The method's result, or (the failure's text on stderr) the exit status."""
    reporter = ProgressReporter(_no_progress, interval=1.0, heartbeat=1.0)
    try:
        async with reporter.running(enabled=False):
            call = CallContext(services, reporter, Grant(), on_chunk, roots=_terminal_roots(services))
            result: MethodResult = await method.invoke(call, raw)
            return result
    except NaiveError as error:
        sys.stdout.flush()
        sys.stderr.write(services.redact(error.describe(_TERMINAL_STEPS.get(error.kind))) + "\n")
        return BAD_USAGE if error.kind in _USAGE_KINDS else FAILED


async def _print_result(
    services: Services, method: Method[Any, Any], raw: dict[str, Any], *, as_json: bool
) -> int:
    result = await _call(services, method, raw)
    if not isinstance(result, MethodResult):
        return result
    if as_json:
        sys.stdout.write(json.dumps(_structured(result), indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("\n\n".join(block for block in result.content() if isinstance(block, str)) + "\n")
    return OK


def _structured(result: MethodResult) -> dict[str, Any]:
    """The tool's structured content, and a chat result's shown images with their data (base64):
    a terminal has no image blocks to carry it."""
    structured: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(result, ChatResult):
        for image, described in zip(result.images, structured["images"], strict=True):
            if image.block is not None:
                described["data"] = image.block.data
    return structured


def _terminal_roots(services: Services) -> AskRoots:
    """At a terminal the files are the user's own: NAIVE_FILE_ROOTS if set, else the current directory."""

    async def roots() -> FileRoots:
        configured = services.settings.file_roots
        if configured:
            return settings_roots(configured, "terminal")
        return FileRoots((Path.cwd(),), "terminal")

    return roots


async def _no_progress(progress: float, message: str) -> None:
    """A terminal has no progress notifications: chat prints its text as it arrives instead."""


class _Echo:
    """Writes a streamed answer's new text as each chunk brings it, with no secret in it: a
    secret's beginning at the end of what has arrived waits for the rest (`Redactor.fragment`)."""

    def __init__(self, out: TextIO, redact: Redactor) -> None:
        self._out = out
        self._redact = redact
        self._offset = 0  # bytes of the stream's text read so far
        self._held = ""  # read, not written: it may be a secret's beginning
        self._written = 0  # characters written, of the redacted text
        self._line_open = False  # the last character written was not a newline

    def __call__(self, stream: ChatStream) -> None:
        pending = self._held + stream.text_since(self._offset)
        self._offset = stream.text_bytes
        shown = self._redact.fragment(pending, cut_before=False)
        self._held = self._redact.exact(pending)[len(shown) :]
        self._write(shown)

    def finish(self, text: str) -> None:
        """The answer is whole (`text`, redacted): write what is left of it, and end the line."""
        self._write(text[self._written :])
        self.end_line()

    def end_line(self) -> None:
        if self._line_open:
            self._out.write("\n")
            self._out.flush()

    def _write(self, text: str) -> None:
        if text:
            self._out.write(text)
            self._out.flush()
            self._written += len(text)
            self._line_open = not text.endswith("\n")


# --- plumbing ----------------------------------------------------------------------------------


def _run(settings_args: list[str], work: Work) -> int:
    # A terminal has no tool-output limit: a long answer is printed whole, never cut to a link.
    settings = read_settings(settings_args).model_copy(update={"max_result_chars": sys.maxsize})
    # A terminal shows the answer; the server's INFO lines only when asked for (NAIVE_LOG_LEVEL).
    level = settings.log_level if "log_level" in settings.model_fields_set else "WARNING"
    configure_logging(level, Redactor(settings.secrets()))
    try:
        with sandboxed(settings) as effective:
            return anyio.run(_with_services, effective, work)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write("\nnaive-mcp: interrupted; the call was stopped\n")
        return INTERRUPTED


async def _with_services(settings: Settings, work: Work) -> int:
    services = Services.create(settings)
    async with services.running():
        try:
            return await work(services)
        except BrokenPipeError:
            # Whoever read stdout has gone (`| head`): the call stops there, as Ctrl-C stops it,
            # and nothing more is written (the interpreter's last flush included).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return BROKEN_PIPE


def _conversation_options(parser: argparse.ArgumentParser, *, more: str) -> None:
    """The options chat and compare share: the conversation, sampling, tenant, thread, the rest
    of the tool's arguments (`more` names some)."""
    parser.add_argument("-s", "--system", help="a system message")
    parser.add_argument("--temperature")
    parser.add_argument("--max-tokens")
    parser.add_argument(
        "--reasoning-effort", metavar="LEVEL", help="xhigh, high, medium, low, minimal or none"
    )
    parser.add_argument("--user-id", help="the Naive user to call for")
    parser.add_argument("--project-id")
    parser.add_argument(
        "-t", "--thread", metavar="THREAD_ID", help="continue this thread (the summary line names each)"
    )
    parser.add_argument(
        "-f",
        "--file",
        action="append",
        metavar="PATH_OR_GLOB",
        help="a file (or glob, quoted: 'src/**/*.py') sent as context; repeat it. Under NAIVE_FILE_ROOTS, "
        "else the current directory",
    )
    parser.add_argument(
        "--arguments",
        metavar="JSON",
        help=f"more of the tool's arguments, as a JSON object: {more}; validated as the tool validates them",
    )


def _conversation(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    """The tool arguments `_conversation_options` gave (those given)."""
    return _given(
        prompt=prompt,
        system=args.system,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        reasoning={"effort": args.reasoning_effort} if args.reasoning_effort else None,
        user_id=args.user_id,
        project_id=args.project_id,
        thread_id=args.thread,
        files=args.file,
    )


def _more_and_prompt(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """`--arguments`, parsed, and the prompt (`-`: read from stdin)."""
    if args.prompt is None:
        parser.error("give a prompt, or - to read it from stdin")
    more = _json_object(parser, "--arguments", args.arguments)
    return more, sys.stdin.read() if args.prompt == "-" else args.prompt


def _given(**values: Any) -> dict[str, Any]:
    """The arguments the command line gave: an option left out is the method's default."""
    return {name: value for name, value in values.items() if value is not None}


def _json_object(parser: argparse.ArgumentParser, flag: str, text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"{flag} is not valid JSON (line {exc.lineno}, column {exc.colno})")
    if not isinstance(value, dict):
        parser.error(
            f'{flag} takes a JSON object, e.g. {flag} \'{{"response_format": {{"type": "json_object"}}}}\''
        )
    return value


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    refuse_secret_flags(argv)  # before argparse, which would echo an unknown flag's value
    return parser.parse_args(argv)


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"naive-mcp {command}",
        description=description,
        epilog="Every server setting applies, from the environment (NAIVE_*) or as a flag: --sandbox "
        "(the built-in sandbox upstream: no key, no network, no spend), --store, --base-url, … "
        "(naive-mcp --help lists them).",
        allow_abbrev=False,
    )
    parser.set_defaults(settings=[])
    parser.add_argument("--json", action="store_true", help="print the structured result as JSON")
    for name, field in Settings.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, nargs=0, action=_SettingFlag, help=argparse.SUPPRESS)
            parser.add_argument(f"--no-{flag[2:]}", nargs=0, action=_SettingFlag, help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, action=_SettingFlag, help=argparse.SUPPRESS)
    return parser


class _SettingFlag(argparse.Action):
    """A server setting's flag: kept as written, for `read_settings` to parse and validate."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        flag = option_string or self.option_strings[0]
        written = flag if self.nargs == 0 else f"{flag}={values}"
        namespace.settings = [*namespace.settings, written]


def _usage_text(snapshot: dict[str, Any]) -> str:
    def line(figures: dict[str, Any]) -> str:
        total = figures["total"]
        unknown = f" ({total['credits_unknown']} without credits)" if total["credits_unknown"] else ""
        return (
            f"{total['calls']} calls, {total['prompt_tokens']} + {total['completion_tokens']} tokens, "
            f"${total['cost_usd']:.6f}, {total['credits']:.6f} credits{unknown}"
        )

    lines = [
        f"all time:    {line(snapshot)}",
        f"today:       {line(snapshot['today'])}  (since {snapshot['today']['since']})",
        f"this month:  {line(snapshot['this_month'])}  (since {snapshot['this_month']['since']})",
    ]
    by_model: dict[str, dict[str, Any]] = snapshot["by_model"]
    if by_model:
        lines.append("by model, all time:")
        width = max(map(len, by_model))
        lines += [
            f"  {model.ljust(width)}  {tally['calls']} calls, ${tally['cost_usd']:.6f}, "
            f"{tally['credits']:.6f} credits"
            for model, tally in by_model.items()
        ]
    refused = snapshot["by_outcome"].get("refused")
    if refused:
        lines.append(f"refused by a cap, never sent: {refused['calls']} calls")
    lines.append(f"store: {snapshot['store']}")
    return "\n".join(lines) + "\n"
