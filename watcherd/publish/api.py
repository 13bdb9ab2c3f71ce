"""JSON over HTTPS to a forge's API, with the standard library's urllib: synchronous, as
the publishing thread is, and the same client the webhooks use (no HTTP dependency more).

What it will not do: follow a redirect to another origin (the Authorization header would
go with it; urllib keeps it across hosts), follow one for anything but a GET, read more
than ``MAX_RESPONSE`` bytes, or put a credential anywhere but the header. Errors become
ForgeError with the status, the forge's own message (cleaned, cut short) and whether
another try may do better (network trouble, 5xx, 429, a rate limit).
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from watcherd import __version__
from watcherd.job.events import one_line
from watcherd.publish.forge import ForgeError

MAX_RESPONSE = 4 * 1024 * 1024
MAX_REDIRECTS = 3


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx: judged below


_OPENER = urllib.request.build_opener(_NoRedirects())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


class JsonApi:
    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def call(
        self, method: str, path: str, *, authorization: str, body: Any = None,
        query: Mapping[str, str] | None = None, expect: tuple[int, ...] = (200, 201),
    ) -> Any:  # fmt: skip
        """The decoded JSON answer, or ForgeError. ``path`` is the API's, from its base."""
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        for _ in range(MAX_REDIRECTS + 1):
            status, headers, raw = self._send(method, url, authorization, data)
            if status in (301, 302, 303, 307, 308):
                target = urllib.parse.urljoin(url, headers.get("location", ""))
                if method != "GET" or _origin(target) != _origin(url):
                    where = one_line(urllib.parse.urlsplit(target).netloc or "nowhere", 100)
                    raise ForgeError(
                        f"the forge's API redirected {method} {path} to {where} (HTTP "
                        f"{status}); not followed: the credential stays with {self.base_url}"
                    )
                url = target
                continue
            if status not in expect:
                raise _error(method, path, status, headers, raw)
            if not raw.strip():
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise ForgeError(f"{method} {path}: the forge's answer is not JSON") from None
        raise ForgeError(f"{method} {path}: more than {MAX_REDIRECTS} redirects")

    def _send(
        self, method: str, url: str, authorization: str, data: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/vnd.github+json",
            "Authorization": authorization,
            "User-Agent": f"watcherd/{__version__}",
            "X-GitHub-Api-Version": "2022-11-28",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })  # fmt: skip
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return response.status, _lowered(response.headers), response.read(MAX_RESPONSE)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _lowered(exc.headers), exc.read(MAX_RESPONSE)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise ForgeError(f"no answer from the forge's API: {one_line(str(reason), 200)}",
                             transient=True) from None  # fmt: skip


def _lowered(headers: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in headers.items()}


def _error(
    method: str, path: str, status: int, headers: Mapping[str, str], raw: bytes
) -> ForgeError:
    said = _message(raw)
    where = f"{method} {path}: HTTP {status}" + (f": {said}" if said else "")
    if status == 401:
        return ForgeError(f"the forge refused the credential ({where})")
    if status == 403 or status == 429:
        limited = headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers
        if limited or status == 429:
            return ForgeError(f"rate-limited by the forge ({where})", transient=True)
        return ForgeError(f"the credential may not do this ({where})")
    if status == 404:
        return ForgeError(f"not found, or the credential cannot see it ({where})")
    return ForgeError(where, transient=status >= 500 or status == 408)


def _message(raw: bytes) -> str:
    """GitHub's ``message`` and its ``errors[].message``, one line, cut short."""
    try:
        data = json.loads(raw)
    except ValueError:
        return one_line(raw.decode("utf-8", "replace"), 200) if raw.strip() else ""
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message") or "")]
    errors = data.get("errors")
    if isinstance(errors, list):
        for error in errors[:3]:
            if isinstance(error, dict) and error.get("message"):
                parts.append(str(error["message"]))
            elif isinstance(error, str):
                parts.append(error)
    return one_line("; ".join(part for part in parts if part), 300)
