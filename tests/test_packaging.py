"""The wheel `pip install naive-mcp` gets: the package and what it reads at run time, nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


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
    asked = subprocess.run(
        [str(venv / "bin" / "naive-mcp"), "chat", "--sandbox", "hi"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.startswith("Sandbox reply from"), asked.stdout
