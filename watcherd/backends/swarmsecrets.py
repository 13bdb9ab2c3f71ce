"""Credentials as Swarm secrets: one per (variable, value), made when a job first needs it
and named by the value's hash, so that the same key is one secret and a new key another."""

from __future__ import annotations

import hashlib
import threading

import docker.errors
import docker.types

from watcherd.backends.base import NameConflict, RunnerError
from watcherd.backends.dockerapi import DOCKER_ERRORS, DockerAPI, translate

SECRET_PREFIX = "watcherd-"
SECRET_LABEL = "watcherd.secret"


def secret_name(variable: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{SECRET_PREFIX}{variable.lower()}-{digest}"


class SwarmSecrets:
    def __init__(self, api: DockerAPI) -> None:
        self._api = api
        self._ids: dict[str, str] = {}  # secret name -> id
        self._lock = threading.Lock()

    def reference(
        self, variable: str, value: str, uid: str, gid: str
    ) -> docker.types.SecretReference:
        """The secret as a file /run/secrets/<variable>, readable by the job's uid only."""
        name = secret_name(variable, value)
        return docker.types.SecretReference(
            self._id(name, variable, value), name, filename=variable, uid=uid, gid=gid,
            mode=0o400,
        )  # fmt: skip

    def _id(self, name: str, variable: str, value: str) -> str:
        client = self._api.client
        with self._lock:
            if name in self._ids:
                # Still there? An operator may have removed it (`docker secret rm` of the
                # idle ones): a service naming a removed secret is refused, every job after.
                try:
                    client.api.inspect_secret(self._ids[name])
                    return self._ids[name]
                except docker.errors.NotFound:
                    del self._ids[name]
                except DOCKER_ERRORS as exc:
                    raise translate(exc) from exc
            try:
                made = self._api.call(
                    lambda: client.api.create_secret(
                        name, value.encode(), labels={SECRET_LABEL: variable}
                    )
                )
                secret_id = str(made["ID"])
            except NameConflict:  # made by an earlier run of the daemon
                found = self._api.call(lambda: client.api.secrets(filters={"name": name}))
                exact = [s for s in found if s.get("Spec", {}).get("Name") == name]
                if not exact:
                    raise RunnerError(f"secret {name} exists but cannot be found") from None
                secret_id = str(exact[0]["ID"])
            self._ids[name] = secret_id
            return secret_id
