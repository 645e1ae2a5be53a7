"""The wheel `pip install naive-mcp` gets: the package and what it reads at run time, nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_naive_mcp_with_its_migrations_and_sandbox_and_nothing_else(tmp_path: Path) -> None:
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
            str(tmp_path),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("naive_mcp-*.whl")
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
