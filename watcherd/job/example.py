"""The job file as people and agents read it: one annotated example with every key once.

The README's "Job file", the skill (skills/watcherd/SKILL.md) and the MCP server's
``submit_job`` all say what this says: the first two carry the text verbatim (a test checks
it), the third takes each key's note from it. So what they tell about a key cannot drift
apart, and a key added to the schema without a line here fails that test too.
"""

from __future__ import annotations

JOB_FILE_EXAMPLE = """\
repo_url: https://github.com/acme/widgets.git   # required; https or ssh by default
prompt: Fix the failing test in tests/test_api.py  # required, non-empty; given to the agent as-is
agent: codex            # which agent runs it (default: the config's default_agent; see Agents)
repo_ref: main          # branch, tag or commit (default: the remote's default branch)
repo_dir: widgets       # the workspace's folder name, /work/<repo_dir> (default: the repo's name)
branch: fix-api-test    # the result branch in repos/<key>.git (default: watcherd/<id>)
mode: exec              # exec (default) or review (Codex only)
flags: ["--output-schema", "schema.json"]   # extra agent flags from its allowlist (Security model)
model: gpt-5-codex      # the agent's model (default: the agent's own)
max_turns: 20           # where the agent supports it (see Agents)
resume: fix-41          # continue an earlier job's session on its work (name or id; see Agents)
timeout: 30m            # seconds, or 90s / 30m / 2h (default 1h, at most max_timeout)
env: {CI: "1"}          # extra non-secret variables
retries: 2              # transient failures retried this often (default from config)
memory: 2g              # ask for less than the daemon's caps, never more
cpus: 1                 # at most the daemon's cpus
disk: 2g                # disk budget: workspace + out/<id> + Codex home (at most disk_budget)
notify: [team-slack]    # notification targets, by the names the config gives them
publish: draft          # once done: none (default), branch, draft or ready (see Publishing)
pool: gpu               # backend swarm: run on the nodes of this pool of the config's
network: [pypi]         # beyond its model: model (default), the config's egress names, or open
token_budget: 2000000   # input + output tokens through the gateway (default: token_budget)
network_tools: false    # provider-side web search/fetch (only where allow_network_tools)
"""


def key_notes() -> dict[str, str]:
    """Each key's note, with its example value: ``{"timeout": "seconds, or 90s / 30m / 2h
    (default 1h, at most max_timeout); for example 30m", ...}``."""
    notes = {}
    for line in JOB_FILE_EXAMPLE.splitlines():
        key, _, rest = line.partition(":")
        value, _, note = rest.partition("  # ")
        notes[key] = f"{note.strip()}; for example {value.strip()}"
    return notes
