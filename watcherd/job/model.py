"""A job's way out of its container: its model through the gateway and, where it picked some,
the operator's egress allowlists. Here a job's setup becomes the gateway's grant (upstreams,
the operator's keys, the budget) and what its container is told (base URLs and a token in
the agent's own variables and files, the proxy); the keys stay in the daemon.

Inside the container ``/run/watcherd`` holds the job's sockets; the worker's forwarders
turn them into ``127.0.0.1:MODEL_PORT`` (and ``EGRESS_PORT``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from watcherd.agents.base import AgentProfile, ModelSetup, Wiring
from watcherd.config import Config
from watcherd.gateway.grants import Upstream
from watcherd.gateway.meter import Tokens
from watcherd.job.spec import JobSpec
from watcherd.util.safeio import read_whole

MODEL_PORT = 48080
EGRESS_PORT = 48081
RUN_TARGET = "/run/watcherd"
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ModelAccess:
    upstreams: Mapping[str, Upstream]  # route prefix -> the operator's upstream
    env: Mapping[str, str]  # for the container: base URLs, the token, the proxy
    files: Mapping[str, bytes] = field(default_factory=dict)  # the home's rewritten copies

    @property
    def keys(self) -> frozenset[str]:
        """The operator's keys: no variable of the container may hold one."""
        return frozenset(u.key for u in self.upstreams.values() if u.key)


def operator_env(config: Config, agent: str) -> dict[str, str]:
    """The operator's variables for an agent: extra_env, then agents.<name>.env."""
    return {**config.extra_env, **config.agent_settings(agent).env}


def wire_model(
    config: Config, spec: JobSpec, profile: AgentProfile, source: Path | None, token: str,
    api_key: tuple[str, str] | None, login: bool,
) -> ModelAccess:  # fmt: skip
    """The grant's upstreams and the container's side of them, from the operator's setup
    (``source``: the agent's config dir or leased login) for this job."""
    files = {}
    if source is not None:
        for name in profile.config_files:
            data = read_whole(source / name, MAX_CONFIG_BYTES)
            if data is not None:
                files[name] = data
        if login and profile.login_file:  # read by its wiring, never copied into the job
            data = read_whole(source / profile.login_file, MAX_CONFIG_BYTES)
            if data is not None:
                files[profile.login_file] = data
    setup = ModelSetup(
        files=files, env=operator_env(config, spec.agent), api_key=api_key, login=login
    )
    upstreams: dict[str, Upstream] = {}

    def route(api: str, url: str, key: str | None, headers: Mapping[str, str] | None = None) -> str:
        prefix = f"m{len(upstreams)}"
        upstreams[prefix] = Upstream(api, url.rstrip("/"), key, dict(headers or {}))
        return f"http://127.0.0.1:{MODEL_PORT}/{prefix}"

    wiring = profile.wire(setup, route, token) if profile.wire else Wiring()
    env = dict(wiring.env)
    if isinstance(spec.network, tuple):  # the operator's allowlists, through the daemon
        proxy = f"http://127.0.0.1:{EGRESS_PORT}"
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            env[name] = proxy
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env["WATCHERD_EGRESS_PORT"] = str(EGRESS_PORT)
    env["WATCHERD_MODEL_PORT"] = str(MODEL_PORT)
    return ModelAccess(upstreams=upstreams, env=env, files=dict(wiring.files))


def spent_before(audit_path: Path) -> Tokens:
    """What a job's earlier calls cost, from its audit file: the budget of a job adopted
    after a restart counts them."""
    spent = Tokens()
    data = read_whole(audit_path, 64 * 1024 * 1024)
    for line in (data or b"").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("kind") == "model":
            spent.input += int(record.get("input_tokens") or 0)
            spent.output += int(record.get("output_tokens") or 0)
    return spent
