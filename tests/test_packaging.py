"""The wheel `pip install naive-mcp` gets (the package and what it reads at run time, nothing
else), and the installs the README names — pip, pipx (either backend), uvx from git or a
directory — each made offline, from the wheels scripts/bootstrap keeps in .venv/wheelhouse, and
each answering a sandbox chat."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTALL_TIMEOUT = 300  # generous: a busy machine; an install that hangs still ends the test


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    found = Path(sys.prefix) / "wheelhouse"
    assert (found / ".stamp").exists(), "no .venv/wheelhouse: run scripts/bootstrap --dev"
    return found


def offline_env(home: Path, wheelhouse: Path, **more: str) -> dict[str, str]:
    """An environment with no index and no machine config: pip and uv find every package in
    the wheelhouse or not at all. PATH holds this environment's bin for uv, not its python."""
    return {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "UV_NO_CONFIG": "1",
        "UV_OFFLINE": "1",
        "UV_CACHE_DIR": str(home / "uv-cache"),
        "UV_TOOL_DIR": str(home / "uv-tools"),
        "UV_PYTHON_DOWNLOADS": "never",
        **more,
    }


def answers_a_sandbox_chat(command: list[str], home: Path, env: dict[str, str] | None = None) -> None:
    asked = subprocess.run(
        [*command, "chat", "--sandbox", "hi"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        cwd=home,  # not the checkout, whose naive_mcp/ the current directory would import
        env=env or {"PATH": "/usr/bin:/bin", "HOME": str(home)},
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout == "Sandbox reply from anthropic/claude-sonnet-4.6: hi\n", asked.stdout


def build_wheel(into: Path) -> Path:
    # hatchling comes with the dev tools, so the build needs no index (no build isolation).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(into),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = into.glob("naive_mcp-*.whl")
    return wheel


def test_the_wheel_ships_naive_mcp_with_its_migrations_and_sandbox_and_nothing_else(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = next(top for top in tops if top.endswith(".dist-info"))

    assert tops == {"naive_mcp", dist_info}, "no bench/, tests/ or anything else beside the package"
    assert dist_info.startswith("naive_mcp-")
    for needed in (
        "naive_mcp/py.typed",
        "naive_mcp/sandbox/app.py",  # --sandbox and scripts/serve without a key
        "naive_mcp/store/migrations/env.py",  # the store migrates forward at start
        "naive_mcp/store/migrations/script.py.mako",
        "naive_mcp/store/migrations/versions/0001_state_store.py",
    ):
        assert needed in names, needed
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "naive-mcp = naive_mcp.cli:main" in entry_points


def test_the_wheel_installs_into_a_fresh_environment_and_runs(tmp_path: Path) -> None:
    """`pip install` of the wheel, offline: a fresh venv that borrows this environment's
    dependencies (a .pth file; the .pth files of a borrowed directory are not run, so this
    checkout's editable install stays out) and gets naive_mcp from the wheel alone."""
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    [site] = venv.glob("lib/python*/site-packages")
    borrowed = [path for path in sys.path if path.endswith("site-packages")]
    (site / "borrowed-dependencies.pth").write_text("\n".join(borrowed) + "\n")
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        timeout=300,
    )
    where = subprocess.run(
        [str(python), "-c", "import naive_mcp; print(naive_mcp.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,  # not the checkout, whose naive_mcp/ the current directory would import
    )
    assert where.stdout.startswith(str(site)), "naive_mcp comes from the installed wheel, not the checkout"
    version = subprocess.run(
        [str(venv / "bin" / "naive-mcp"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert version.stdout.startswith("naive-mcp ")
    answers_a_sandbox_chat([str(venv / "bin" / "naive-mcp")], tmp_path)


@pytest.mark.parametrize("backend", ["uv", "pip"])
def test_pipx_installs_the_wheel_with_either_backend(tmp_path: Path, wheelhouse: Path, backend: str) -> None:
    wheel = build_wheel(tmp_path / "dist")
    home = tmp_path / "home"
    home.mkdir()
    env = offline_env(
        home,
        wheelhouse,
        PIPX_HOME=str(home / "pipx"),
        PIPX_BIN_DIR=str(home / "bin"),
        PIPX_MAN_DIR=str(home / "man"),
    )
    # uv reads no PIP_* variable: pipx passes --pip-args on, to pip or translated for uv.
    installed = subprocess.run(
        [
            str(BIN / "pipx"),
            "install",
            "--backend",
            backend,
            f"--pip-args=--no-index --find-links {wheelhouse}",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        cwd=home,
        env=env,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    answers_a_sandbox_chat([str(home / "bin" / "naive-mcp")], home)


@pytest.mark.parametrize("source", ["git", "directory"])
def test_uvx_runs_naive_mcp_from_git_or_a_directory(tmp_path: Path, wheelhouse: Path, source: str) -> None:
    """`uvx --from git+URL naive-mcp` as the README gives it, with this checkout's committed
    HEAD as the repository (git+file://), built by uv with hatchling from the wheelhouse."""
    spec = f"git+file://{ROOT}" if source == "git" else str(ROOT)
    env = offline_env(tmp_path, wheelhouse)
    uvx = [str(BIN / "uvx"), "--no-index", "--find-links", str(wheelhouse), "--from", spec, "naive-mcp"]
    answers_a_sandbox_chat(uvx, tmp_path, env)
