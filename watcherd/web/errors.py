"""Every refusal as the same small JSON body: ``{"error": reason, "status": code}``."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web


def problem(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason, "status": status}, status=status,
                             headers=headers)  # fmt: skip
