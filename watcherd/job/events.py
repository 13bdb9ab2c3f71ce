"""Codex's JSON event stream (``codex exec --json``, out/<id>/events.jsonl) for a person:
the commands the agent ran and their exit codes, the files it changed, what it said, and
the tokens so far. Pure: events in, lines out; no I/O, no clock.

Every text in an event comes from the agent or the model, so it is shown, never obeyed:
terminal control sequences, other control characters and bidi overrides are removed, and
long texts are cut. Events of a kind this does not know are skipped: newer Codex versions
add some.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OUTPUT_LINES = 6  # of a command's output, the last ones (where errors are)
MESSAGE_LINES = 40  # of an agent message
LINE_WIDTH = 240  # characters of one line
STEP_WIDTH = 200  # characters of a one-line step (the daemon's log, status)

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement, ...
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
)
_DROP: dict[int, str | None] = {
    c: None for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]
}
_DROP.update({c: None for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]})  # bidi
_DROP[0x09] = "    "
_SHELL_WRAPPER = re.compile(r"(?:/usr)?/bin/(?:ba|da|z)?sh -l?c (.+)", re.DOTALL)


def clean(text: object) -> str:
    """``text`` as plain printable lines (newlines kept)."""
    if not isinstance(text, str):
        return ""
    text = _ESCAPES.sub("", text.replace("\r\n", "\n"))
    return text.translate(_DROP)


def one_line(text: object, width: int = LINE_WIDTH) -> str:
    flat = " ".join(clean(text).split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def command_text(command: object) -> str:
    """What the agent ran, without Codex's ``/bin/bash -lc '...'`` around it."""
    if isinstance(command, list):
        command = shlex.join(str(part) for part in command)
    if not isinstance(command, str):
        return ""
    wrapped = _SHELL_WRAPPER.fullmatch(command)
    if wrapped:
        try:
            words = shlex.split(wrapped.group(1))
        except ValueError:
            words = []
        if len(words) == 1:
            return words[0]
    return command


@dataclass
class Tokens:
    """Token use summed over the turns seen (each ``turn.completed`` reports its turn's)."""

    input: int = 0
    cached_input: int = 0
    output: int = 0
    turns: int = 0

    def add(self, usage: object) -> None:
        if not isinstance(usage, Mapping):
            return
        self.input += _count(usage.get("input_tokens"))
        self.cached_input += _count(usage.get("cached_input_tokens"))
        self.output += _count(usage.get("output_tokens"))
        self.turns += 1

    @property
    def total(self) -> int:
        return self.input + self.output  # cached input is part of the input

    def describe(self) -> str:
        return (
            f"{self.total:,} tokens ({self.input:,} in, {self.cached_input:,} cached, "
            f"{self.output:,} out)"
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass
class Renderer:
    """Feeds events in order and returns the lines each adds."""

    tokens: Tokens = field(default_factory=Tokens)
    _shown_starts: set[str] = field(default_factory=set)  # items whose start was printed
    _plan: tuple[tuple[str, bool], ...] = ()

    def feed(self, event: object) -> list[str]:
        if not isinstance(event, Mapping):
            return []
        kind = event.get("type")
        item = event.get("item")
        if kind in ("item.started", "item.updated", "item.completed") and isinstance(item, Mapping):
            return self._item(str(kind).removeprefix("item."), item)
        if kind == "thread.started":
            return [f"codex session {one_line(event.get('thread_id'), 80)} started"]
        if kind == "turn.completed":
            before = self.tokens.total
            self.tokens.add(event.get("usage"))
            spent = self.tokens.total - before
            return [f"turn done: {spent:,} tokens this turn; so far {self.tokens.describe()}"]
        if kind == "turn.failed":
            return [f"turn failed: {_error_text(event.get('error'))}"]
        if kind == "error":
            return [f"error: {one_line(event.get('message'))}"]
        if kind == "request_user_input":
            return ["the agent asked for input (none can be given to a job)"]
        return []

    def _item(self, phase: str, item: Mapping[str, Any]) -> list[str]:
        kind = item.get("type")
        item_id = str(item.get("id", ""))
        if kind == "todo_list":
            return self._todo(item)
        if kind == "command_execution":
            return self._command(phase, item_id, item)
        if kind == "mcp_tool_call":
            name = f"{one_line(item.get('server'), 60)}.{one_line(item.get('tool'), 60)}"
            if phase == "started":
                self._shown_starts.add(item_id)
                return [f"tool {name} ..."]
            if phase == "completed":
                error = item.get("error")
                if item.get("status") == "failed" or isinstance(error, Mapping):
                    return [f"tool {name} failed: {_error_text(error)}"]
                return [f"tool {name} done"]
            return []
        if phase != "completed":
            return []
        if kind == "agent_message":
            return _block("agent: ", clean(item.get("text")), MESSAGE_LINES)
        if kind == "reasoning":
            return [f"thinking: {one_line(item.get('text'))}"]
        if kind == "file_change":
            return [_file_changes(item)]
        if kind == "web_search":
            return [f"web search: {one_line(item.get('query'))}"]
        if kind == "plan":
            return _block("plan: ", clean(item.get("text")), MESSAGE_LINES)
        if kind == "collab_tool_call":
            return [f"sub-agent {one_line(item.get('tool'), 40)}: {one_line(item.get('status'))}"]
        if kind == "error":
            return [f"warning: {one_line(item.get('message'))}"]
        return []

    def _command(self, phase: str, item_id: str, item: Mapping[str, Any]) -> list[str]:
        header = f"$ {one_line(command_text(item.get('command')))}"
        if phase == "started":
            self._shown_starts.add(item_id)
            return [header]
        if phase != "completed":
            return []
        lines = [] if item_id in self._shown_starts else [header]
        self._shown_starts.discard(item_id)
        output = clean(item.get("aggregated_output")).rstrip("\n").split("\n")
        output = [line for line in output if line.strip()] if any(output) else []
        if len(output) > OUTPUT_LINES:
            lines.append(f"    ... {len(output) - OUTPUT_LINES} earlier line(s)")
        lines += [f"    {one_line(line)}" for line in output[-OUTPUT_LINES:]]
        lines.append(f"  {_exit_text(item)}")
        return lines

    def _todo(self, item: Mapping[str, Any]) -> list[str]:
        entries = item.get("items")
        plan = tuple(
            (one_line(entry.get("text")), entry.get("completed") is True)
            for entry in (entries if isinstance(entries, list) else [])
            if isinstance(entry, Mapping)
        )
        if plan == self._plan:
            return []
        self._plan = plan
        done = sum(1 for _, completed in plan if completed)
        return [f"plan ({done}/{len(plan)} done):"] + [
            f"  [{'x' if completed else ' '}] {text}" for text, completed in plan
        ]


def render(events: Iterable[object]) -> list[str]:
    """All the lines for a whole stream."""
    renderer = Renderer()
    return [line for event in events for line in renderer.feed(event)]


def step_line(event: object) -> str | None:
    """One line for a finished step of the agent (a command, an edit, a message, a tool
    call, a search, the end of a turn), else None: the daemon logs these."""
    if not isinstance(event, Mapping):
        return None
    kind = event.get("type")
    if kind == "turn.completed":
        tokens = Tokens()
        tokens.add(event.get("usage"))
        return f"turn done, {tokens.describe()}"
    if kind == "turn.failed":
        return f"turn failed: {_error_text(event.get('error'), STEP_WIDTH)}"
    if kind == "error":
        return f"error: {one_line(event.get('message'), STEP_WIDTH)}"
    item = event.get("item")
    if kind != "item.completed" or not isinstance(item, Mapping):
        return None
    item_kind = item.get("type")
    if item_kind == "command_execution":
        command = one_line(command_text(item.get("command")), STEP_WIDTH)
        return f"ran {command} ({_exit_text(item)})"
    if item_kind == "file_change":
        return one_line(_file_changes(item), STEP_WIDTH)
    if item_kind == "agent_message":
        return f"said: {one_line(item.get('text'), STEP_WIDTH)}"
    if item_kind == "mcp_tool_call":
        name = f"{one_line(item.get('server'), 60)}.{one_line(item.get('tool'), 60)}"
        return f"called tool {name} ({one_line(item.get('status'), 20)})"
    if item_kind == "web_search":
        return f"searched the web: {one_line(item.get('query'), STEP_WIDTH)}"
    return None


def activity_line(event: object) -> str | None:
    """What the agent was doing at this event: a finished step, or a command it started."""
    line = step_line(event)
    if line is not None or not isinstance(event, Mapping):
        return line
    item = event.get("item")
    if event.get("type") == "item.started" and isinstance(item, Mapping):
        if item.get("type") == "command_execution":
            return f"running {one_line(command_text(item.get('command')), STEP_WIDTH)}"
        if item.get("type") == "mcp_tool_call":
            return f"calling tool {one_line(item.get('server'), 60)}.{one_line(item.get('tool'))}"
    completed = item if event.get("type") == "item.completed" else None
    if isinstance(completed, Mapping) and completed.get("type") == "reasoning":
        return f"thinking: {one_line(completed.get('text'), STEP_WIDTH)}"
    return None


def _exit_text(item: Mapping[str, Any]) -> str:
    code = item.get("exit_code")
    status = item.get("status")
    if isinstance(code, int) and not isinstance(code, bool):
        return f"exit {code}" if code == 0 else f"exit {code}, failed"
    if status == "declined":
        return "declined"
    return one_line(status, 40) or "no exit code"


def _file_changes(item: Mapping[str, Any]) -> str:
    changes = item.get("changes")
    described = [
        f"{one_line(change.get('path'), 160)} ({_CHANGE_KINDS.get(str(change.get('kind')), '?')})"
        for change in (changes if isinstance(changes, list) else [])
        if isinstance(change, Mapping)
    ]
    what = ", ".join(described) or "(none listed)"
    if item.get("status") == "failed":
        return f"file change failed: {what}"
    return f"files changed: {what}"


_CHANGE_KINDS = {"add": "added", "delete": "deleted", "update": "updated"}


def _error_text(error: object, width: int = LINE_WIDTH) -> str:
    if isinstance(error, Mapping):
        return one_line(error.get("message"), width) or "(no message)"
    return one_line(error, width) or "(no message)"


def _block(prefix: str, text: str, max_lines: int) -> list[str]:
    """A multi-line text under a prefix, its lines indented to match."""
    lines = [line.rstrip() for line in text.strip("\n").split("\n")] or [""]
    cut = len(lines) > max_lines
    lines = lines[:max_lines]
    pad = " " * len(prefix)
    out = [prefix + _fit(lines[0])] + [pad + _fit(line) for line in lines[1:]]
    if cut:
        out.append(f"{pad}... (cut at {max_lines} lines)")
    return out


def _fit(line: str) -> str:
    return line if len(line) <= LINE_WIDTH else line[: LINE_WIDTH - 3] + "..."
