"""`python -m naive_mcp.sandbox [--port N]`: serve the sandbox upstream alone, for any client."""

from __future__ import annotations

import argparse

import uvicorn

from naive_mcp.sandbox.app import SandboxConfig, create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m naive_mcp.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--models-shape", choices=["naive", "openrouter"], default="naive")
    args = parser.parse_args()
    config = SandboxConfig(latency=args.latency, models_shape=args.models_shape)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="info")


main()
