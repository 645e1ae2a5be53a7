"""Files as context: which files a call may read, read within bounds, and where an answer may go.

A call names paths and globs (`README.md`, `src/**/*.py`); the server reads them itself, so the
text never passes through the agent. Everything here takes plain values — the allowed roots
(`FileRoots`, chosen by the MCP face: the client's MCP roots, or NAIVE_FILE_ROOTS) and the limits
— and knows nothing of MCP, HTTP or the store: chat and compare both use it, and so does the
terminal, which is why it is not under `primitives/llm/`.

What is refused (an `ArgumentError`: nothing is sent, nothing is spent) and what is skipped
(listed in the result with the reason, the call goes on):
- refused: no roots at all; a path whose `..` leaves every root; an absolute path outside every
  root; a symlink (or a path through one) that leads outside; a named file that does not exist;
  a glob that matches nothing; a call whose files were all skipped (it would be sent without the
  context it asked for).
- skipped: binary files (a NUL byte, or not UTF-8), files `.gitignore` ignores (nested ones
  too; `.git/` always), anything not a regular file, a file past NAIVE_MAX_FILE_BYTES, one that
  would take the call past NAIVE_MAX_FILES_BYTES, and matches past NAIVE_MAX_FILES. A file is
  never cut: it is sent whole or not at all.

Reading is bounded: a file is stat-ed before it is read, and at most its limit plus one byte is
read; a glob's walk stops at the file count, or after `MAX_WALKED_ENTRIES` directory entries.
"""

from __future__ import annotations

import errno
import fnmatch
import itertools
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pathspec
from pydantic import BaseModel, Field

from naive_mcp.errors import ArgumentError

# However few files a glob matches, its walk stops after this many directory entries: a
# `**/*.md` over a home directory would otherwise read every directory of it.
MAX_WALKED_ENTRIES = 20_000
# The skipped files a result lists by name; past it, their count only (a result is read by a model).
MAX_LISTED_SKIPS = 40
_GLOB_CHARS = frozenset("*?[")

RootsSource = Literal["client", "settings", "terminal"]


@dataclass(frozen=True, slots=True)
class FileRoots:
    """The directories a call may read and write under (absolute), where they come from, and,
    when there are none, why (the text of the refusal)."""

    paths: tuple[Path, ...]
    source: RootsSource = "settings"
    off_because: str | None = None


# Where a call may read and write, asked for when it first needs them (from a client: a round trip).
AskRoots = Callable[[], Awaitable[FileRoots]]


@dataclass(frozen=True, slots=True)
class FileLimits:
    file_bytes: int  # NAIVE_MAX_FILE_BYTES
    total_bytes: int  # NAIVE_MAX_FILES_BYTES
    count: int  # NAIVE_MAX_FILES


class IncludedFile(BaseModel):
    path: str
    bytes: int


class SkippedFile(BaseModel):
    path: str
    reason: str


class FilesUsed(BaseModel):
    """The files a call used: what of its `files` was sent, what was not and why (past
    `MAX_LISTED_SKIPS`, counted only), and where `output_file` wrote the answer."""

    included: list[IncludedFile] = Field(default_factory=list)
    skipped: list[SkippedFile] = Field(default_factory=list)
    skipped_not_listed: int = 0
    output_file: str | None = None

    def line(self) -> str | None:
        if not self.included and not self.skipped:
            return None
        sent = sum(entry.bytes for entry in self.included)
        skipped = len(self.skipped) + self.skipped_not_listed
        return f"files {len(self.included)} sent ({sent} bytes)" + (
            f", {skipped} skipped (see files.skipped)" if skipped else ""
        )


@dataclass
class ReadFiles:
    """The files read for a call: each one's label and text, and the account of them."""

    texts: list[tuple[str, str]]
    used: FilesUsed

    def message(self) -> dict[str, str]:
        """The one user message that carries them, sent before the call's own messages."""
        parts = [
            "The files below are context for this conversation. Each is headed by its path and "
            "fenced as it is on disk."
        ]
        for label, text in self.texts:
            fence = "`" * max(3, _longest_run(text, "`") + 1)
            parts.append(f"{label}\n{fence}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{fence}")
        return {"role": "user", "content": "\n\n".join(parts)}


def _longest_run(text: str, char: str) -> int:
    longest = run = 0
    for c in text:
        run = run + 1 if c == char else 0
        longest = max(longest, run)
    return longest


def usable(roots: FileRoots, what: str) -> tuple[Path, ...]:
    """The roots, or the refusal that says why there are none and what to set."""
    if roots.paths:
        return roots.paths
    raise ArgumentError(f"{what}: {roots.off_because or 'no file roots are set'}", kind="files_off")


def _refused(field_name: str, entry: str, why: str) -> ArgumentError:
    return ArgumentError(f"{field_name}: {entry!r} {why}", kind="file_refused")


def _within(path: Path, roots: Sequence[Path]) -> Path | None:
    """The root `path` (absolute, normalised) is in, or None."""
    for root in roots:
        if path == root or path.is_relative_to(root):
            return root
    return None


_SOURCES: dict[RootsSource, str] = {
    "client": "the client's MCP roots",
    "settings": "NAIVE_FILE_ROOTS",
    "terminal": "the current directory",
}


def _outside(roots: FileRoots) -> str:
    listed = ", ".join(str(root) for root in roots.paths)
    return f"is outside the allowed roots ({_SOURCES[roots.source]}: {listed})"


def _lexical(entry: str, roots: Sequence[Path]) -> Path:
    """`entry` as an absolute path: a relative one against the first root; `..` folded."""
    given = Path(entry)
    return Path(os.path.normpath(given if given.is_absolute() else roots[0] / given))


def _label(path: Path, roots: Sequence[Path]) -> str:
    """How a file is named to the model: relative to the first root when inside it, else absolute."""
    return path.relative_to(roots[0]).as_posix() if path.is_relative_to(roots[0]) else str(path)


def in_git_dir(parts: Iterable[str]) -> bool:
    """Whether a path of these parts is git's own directory or in it: `.git` in any case, since on
    a case-insensitive disk (macOS, Windows) `.GIT/config` is `.git/config`."""
    return any(part.casefold() == ".git" for part in parts)


class _Ignores:
    """The `.gitignore` files from a root down, read once each; `.git/` is always ignored."""

    def __init__(self) -> None:
        self._specs: dict[Path, pathspec.GitIgnoreSpec | None] = {}

    def _spec(self, directory: Path) -> pathspec.GitIgnoreSpec | None:
        if directory not in self._specs:
            spec = None
            ignore = directory / ".gitignore"
            try:
                if ignore.is_file() and not ignore.is_symlink() and ignore.stat().st_size < 1_000_000:
                    spec = pathspec.GitIgnoreSpec.from_lines(ignore.read_text(errors="replace").splitlines())
            except OSError:
                spec = None
            self._specs[directory] = spec
        return self._specs[directory]

    def ignored(self, path: Path, root: Path, *, is_dir: bool) -> bool:
        """Whether git would ignore `path` (in `root`), by the .gitignore files of its directories
        from `root` down: the deepest that has a say decides. Its directories are not checked
        here: a walk prunes ignored ones, and `ignored_on_the_way` checks a named file's."""
        if in_git_dir(path.relative_to(root).parts):
            return True
        decided: bool | None = None
        directory = path.parent
        while True:
            spec = self._spec(directory)
            if spec is not None:
                relative = path.relative_to(directory).as_posix() + ("/" if is_dir else "")
                include = spec.check_file(relative).include
                if include is not None:
                    decided = include
                    break
            if directory == root or not directory.is_relative_to(root):
                break
            directory = directory.parent
        return bool(decided)

    def ignored_on_the_way(self, path: Path, root: Path) -> str | None:
        """The first directory between `root` and `path` (or `path` itself) that is ignored."""
        current = root
        for part in path.relative_to(root).parts[:-1]:
            current = current / part
            if self.ignored(current, root, is_dir=True):
                return current.relative_to(root).as_posix() + "/"
        return None


@dataclass
class _Reader:
    roots: tuple[Path, ...]
    limits: FileLimits
    given: FileRoots  # the roots and where they come from, for messages
    ignores: _Ignores = field(default_factory=_Ignores)
    texts: list[tuple[str, str]] = field(default_factory=list)
    included: list[IncludedFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)
    total: int = 0
    stopped: bool = False  # a walk stopped at MAX_WALKED_ENTRIES
    walked: int = 0  # the directory entries the call's walks have listed, all of them together
    real_roots: list[Path] = field(default_factory=list)  # the roots, symlinks resolved

    def __post_init__(self) -> None:
        self.real_roots = [root.resolve() for root in self.roots]

    def skip(self, path: Path | str, reason: str) -> None:
        label = _label(path, self.roots) if isinstance(path, Path) else path
        self.skipped.append(SkippedFile(path=label, reason=reason))

    @property
    def full(self) -> bool:
        return len(self.included) >= self.limits.count

    def take(self, lexical: Path, root: Path) -> None:
        """One file, found by a name or a glob: read and kept, or skipped with the reason."""
        try:
            real = lexical.resolve(strict=True)
        except (OSError, RuntimeError):
            self.skip(lexical, "could not be resolved (a broken symlink?)")
            return
        real_root = _within(real, self.real_roots)
        if real_root is None:
            self.skip(lexical, "is a symlink that leads outside the allowed roots: not read")
            return
        if real in self.seen:
            return
        self.seen.add(real)
        if self.ignores.ignored(lexical, root, is_dir=False):
            git = in_git_dir(lexical.relative_to(root).parts)
            self.skip(lexical, "in .git/, which is never read" if git else "ignored by .gitignore")
            return
        led = real.relative_to(real_root)
        if led != lexical.relative_to(root) and (
            self.ignores.ignored(real, real_root, is_dir=False)
            or self.ignores.ignored_on_the_way(real, real_root) is not None
        ):
            # A symlink (the file, or a directory on the way) to what git ignores or to .git/: what
            # it leads to decides, or `notes -> .env` would send the secrets .gitignore keeps out.
            where = (
                "into .git/, which is never read"
                if in_git_dir(led.parts)
                else f"to {led.as_posix()}, which .gitignore ignores"
            )
            self.skip(lexical, f"leads through a symlink {where}")
            return
        if self.full:
            self.skip(lexical, f"past the {self.limits.count}-file limit (NAIVE_MAX_FILES): not read")
            return
        text, why = self._read(real)
        if text is None:
            self.skip(lexical, why)
            return
        size = len(text.encode())
        if self.total + size > self.limits.total_bytes:
            self.skip(
                lexical,
                f"{size} bytes would take the call past {self.limits.total_bytes} bytes of files in all "
                "(NAIVE_MAX_FILES_BYTES): not sent",
            )
            return
        self.total += size
        label = _label(lexical, self.roots)
        self.texts.append((label, text))
        self.included.append(IncludedFile(path=label, bytes=size))

    def _read(self, real: Path) -> tuple[str | None, str]:
        """The text of regular file `real`, or None and why not; never more than the limit + 1
        bytes read, and never a FIFO or device opened for reading (it could block for ever)."""
        limit = self.limits.file_bytes
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            return None, f"could not be opened ({exc.strerror or type(exc).__name__})"
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None, "not a regular file"
            if info.st_size > limit:
                return None, f"{info.st_size} bytes, past {limit} per file (NAIVE_MAX_FILE_BYTES): not read"
            with os.fdopen(fd, "rb", closefd=False) as file:
                data = file.read(limit + 1)
        except OSError as exc:
            return None, f"could not be read ({exc.strerror or type(exc).__name__})"
        finally:
            os.close(fd)
        if len(data) > limit:
            return None, f"grew past {limit} bytes per file (NAIVE_MAX_FILE_BYTES) while read: not sent"
        if b"\0" in data:
            return None, "binary (it holds NUL bytes)"
        try:
            return data.decode("utf-8"), ""
        except UnicodeDecodeError:
            return None, "binary (not UTF-8 text)"

    def walk(self, base: Path, root: Path, pattern: Sequence[str] | None) -> Iterator[Path]:
        """Files under `base` (directory symlinks not followed; ignored directories and `.git`
        pruned; no deeper than `pattern` can match) that `pattern` (its segments, relative to
        `base`) matches, sorted; bounded in entries, for the call (each of its globs walking up to
        the bound would make it many times that), and however large one directory is."""
        deepest = None if pattern is None or "**" in pattern else len(pattern) - 1
        pending = [base]
        while pending:
            directory = pending.pop()
            depth = len(directory.relative_to(base).parts)
            try:
                with os.scandir(directory) as listing:
                    room = max(MAX_WALKED_ENTRIES - self.walked, 0) + 1  # one past: the walk stops at it
                    entries = sorted(itertools.islice(listing, room), key=lambda entry: entry.name)
            except OSError:
                self.skip(directory, "could not be listed")
                continue
            subdirs: list[Path] = []
            for entry in entries:
                self.walked += 1
                if self.walked > MAX_WALKED_ENTRIES:
                    self.stopped = True
                    self.skip(
                        base,
                        f"the walk stopped after {MAX_WALKED_ENTRIES} directory entries: name a narrower glob",  # noqa: E501
                    )
                    return
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    deeper = deepest is None or depth < deepest
                    if deeper and not self.ignores.ignored(path, root, is_dir=True):
                        subdirs.append(path)
                    continue
                if pattern is None or glob_matches(pattern, path.relative_to(base).parts):
                    yield path
            pending.extend(reversed(subdirs))


def read_files(entries: Sequence[str], roots: FileRoots, limits: FileLimits) -> ReadFiles:
    """Read what `entries` name (paths and globs) under `roots`, within `limits` (blocking: run
    it in a worker thread). Refused by name (see the module's docstring) or read."""
    allowed = usable(roots, "files")
    reader = _Reader(allowed, limits, roots)
    for entry in entries:
        _one_entry(reader, entry, allowed)
    if not reader.included:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in reader.skipped[:10])
        raise ArgumentError(
            f"files: none of them could be sent ({reasons}), so the call was not sent either",
            kind="file_refused",
        )
    listed = reader.skipped[:MAX_LISTED_SKIPS]
    used = FilesUsed(
        included=reader.included,
        skipped=listed,
        skipped_not_listed=len(reader.skipped) - len(listed),
    )
    return ReadFiles(reader.texts, used)


def _one_entry(reader: _Reader, entry: str, roots: tuple[Path, ...]) -> None:
    parts = Path(entry).parts
    magic = next((index for index, part in enumerate(parts) if _GLOB_CHARS & set(part)), None)
    if magic is not None and ".." in parts[magic:]:
        raise _refused("files", entry, "has `..` after a wildcard: put the `..` before it, or none")
    fixed = entry if magic is None else os.path.join(*parts[:magic]) if magic else "."
    lexical = _lexical(fixed, roots)
    root = _within(lexical, roots)
    if root is None:
        how = "leaves the allowed roots through `..`" if ".." in parts else _outside(reader.given)
        raise _refused("files", entry, f"{how}: name a path inside them (relative paths start at {roots[0]})")
    # A symlink on the way (a directory of the path) that leads out: refused, as the path itself is.
    try:
        real = lexical.resolve(strict=True)
    except FileNotFoundError:
        raise _refused(
            "files", entry, f"does not exist: check the path (relative paths start at {roots[0]})"
        ) from None
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop, …
        raise _refused("files", entry, f"cannot be used ({_reason(exc)})") from None
    if _within(real, reader.real_roots) is None:
        raise _refused("files", entry, "leads outside the allowed roots through a symlink: not read")
    ignored_dir = reader.ignores.ignored_on_the_way(lexical, root)
    if ignored_dir is not None:
        git = in_git_dir(ignored_dir.split("/")[-2:-1])
        reader.skip(
            lexical, "in .git/, which is never read" if git else f"in {ignored_dir}, which .gitignore ignores"
        )
        return
    if magic is None and not real.is_dir():
        reader.take(lexical, root)
        return
    pattern = parts[magic:] if magic is not None else None
    matched = False
    for path in reader.walk(lexical, root, pattern):
        matched = True
        if reader.full:
            reader.skip(
                entry, f"more matches past the {reader.limits.count}-file limit (NAIVE_MAX_FILES): not read"
            )
            return
        reader.take(path, root)
    if not matched and not reader.stopped:
        raise _refused("files", entry, "matches no file (ignored and .git files aside)")


def glob_matches(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Whether path `parts` match glob `pattern`, segment by segment: `**` is any number of
    directories (none too), `*`, `?` and `[…]` stay within one name (as in a shell, and as
    Python 3.13's `PurePath.full_match`; a leading dot is matched like any other character)."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(glob_matches(rest, parts[index:]) for index in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and glob_matches(rest, parts[1:])


def output_target(entry: str, roots: FileRoots) -> OutputTarget:
    """Where `output_file` writes, checked before the call is sent: inside the roots (its
    nearest existing directory resolved, so no symlink leads out), not a directory, and, if it
    exists, a regular file and not a symlink (it is overwritten)."""
    allowed = usable(roots, "output_file")
    lexical = _lexical(entry, allowed)
    root = _within(lexical, allowed)
    if root is None:
        how = "leaves the allowed roots through `..`" if ".." in Path(entry).parts else _outside(roots)
        raise _refused("output_file", entry, f"{how}: name a path inside them")
    if entry.endswith(("/", os.sep)) or lexical in allowed:
        raise _refused("output_file", entry, "names a directory: name a file in it, e.g. answer.md")
    try:
        real = _writable(entry, lexical, root, allowed)
    except OSError as exc:  # a name too long, a symlink loop, …
        raise _refused("output_file", entry, f"cannot be used ({_reason(exc)})") from None
    return OutputTarget(lexical, real)


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__


def _writable(entry: str, lexical: Path, root: Path, allowed: tuple[Path, ...]) -> Path:
    """Where `lexical` is on disk (see `OutputTarget.real`), once it is found fit to write."""
    existing = lexical.parent
    while not existing.exists():
        existing = existing.parent
    real = existing.resolve()
    real_root = _within(real, [r.resolve() for r in allowed])
    if real_root is None:
        raise _refused("output_file", entry, "leads outside the allowed roots through a symlink")
    # Never into .git/ (lexically, or through a symlink), nor over a worktree's `.git` file: an
    # answer written as .git/config or a hook there would run commands at the next git command.
    written = (
        *lexical.relative_to(root).parts,
        *(real / lexical.relative_to(existing)).relative_to(real_root).parts,
    )
    if in_git_dir(written):
        raise _refused(
            "output_file", entry, "is in .git/, where the server never writes: name a file outside it"
        )
    if lexical.is_symlink():
        raise _refused(
            "output_file", entry, "is a symlink: the server writes only regular files it does not follow"
        )
    if lexical.exists() and not lexical.is_file():
        raise _refused("output_file", entry, "exists and is not a regular file")
    if not existing.is_dir():
        raise _refused("output_file", entry, f"has a file where a directory goes ({existing})")
    return real / lexical.relative_to(existing)


_LONE_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class OutputTarget:
    """Where `output_file` writes: `path` as named (inside the roots), and `real`, where that is on
    disk as checked: its nearest existing directory resolved, the rest as named, so a path with
    no symlink in it, which the write walks again without following any."""

    path: Path
    real: Path

    def __str__(self) -> str:
        return str(self.path)


def write_output(target: OutputTarget, text: str) -> None:
    """Write `text` where `target` says (from `output_target`): missing directories made, an
    existing regular file overwritten. What was swapped in since the check (the answer takes
    minutes) is never followed nor written: a directory on the way become a symlink (the walk
    refuses it), a symlink at the file, or a FIFO or device there (a FIFO's open would wait for
    a reader for ever) (blocking)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | _NO_FOLLOW
    if os.open in os.supports_dir_fd:
        directory = _walk_to(target.real.parent)
        try:
            fd = os.open(target.real.name, flags, 0o644, dir_fd=directory)
        finally:
            os.close(directory)
    else:  # no openat (Windows): the path checked, opened as it is now
        target.real.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target.real, flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        # A lone surrogate (an upstream's "\ud800" escape) is no UTF-8: written as U+FFFD.
        file.write(_LONE_SURROGATES.sub("\ufffd", text))


_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _walk_to(directory: Path) -> int:
    """`directory` (absolute, with no symlink in it) opened, each part from the top opened in the
    one before without following a symlink, and made where missing: a part that has become a
    symlink fails the open (ELOOP, or ENOTDIR), so the walk never leaves the checked path."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NO_FOLLOW
    fd = os.open(directory.anchor, flags)
    try:
        for part in directory.parts[1:]:
            try:
                step = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, dir_fd=fd)
                step = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd


def roots_from_uris(uris: Sequence[str]) -> tuple[Path, ...]:
    """A client's MCP roots (file:// URIs) as directories; any other scheme is left out."""
    from urllib.parse import unquote, urlsplit

    paths = []
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            path = Path(unquote(parts.path))
            if path.is_absolute():
                paths.append(Path(os.path.normpath(path)))
    return tuple(paths)


def settings_roots(configured: Sequence[str], over: Literal["stdio", "http", "terminal"]) -> FileRoots:
    """The roots NAIVE_FILE_ROOTS names (`configured`), or why there are none: a message that
    names the setting (and over stdio, the client's roots)."""
    if configured:
        return FileRoots(tuple(Path(os.path.normpath(root)) for root in configured), "settings")
    if over == "http":
        why = (
            "reading and writing files is off over HTTP: the server's disk is not the client's, and a "
            "client's MCP roots are not trusted there. Send the text in `messages` instead, or have the "
            "operator set NAIVE_FILE_ROOTS to the directories this server may read"
        )
    else:
        why = (
            "no file roots: the client offers no MCP roots (roots/list) and NAIVE_FILE_ROOTS is not "
            "set. Have the client offer roots, or set NAIVE_FILE_ROOTS=/path/to/project in the "
            "server's environment"
        )
    return FileRoots((), "settings", why)
