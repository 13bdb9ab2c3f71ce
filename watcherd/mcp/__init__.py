"""``watcherd mcp``: the jobs of a root as MCP tools over stdio, for agent hosts (Codex,
Claude Code, OpenClaw) to submit, wait for and read jobs in their own terms. It reads and
writes the root's folders through watcherd.client, as the CLI does: no daemon or HTTP
server has to run for it to answer."""
