"""What every front end (the CLI, the HTTP server, the MCP server) does over a root: submit a
job, find it, view it, follow it."""
