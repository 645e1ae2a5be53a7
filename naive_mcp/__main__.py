from naive_mcp.cli import main

main()
