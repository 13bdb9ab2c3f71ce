"""The daemon's log line per agent step: a running job's thread reads its events.jsonl
about once a second (JobLife._wait) and logs each finished step (a command and its exit
code, an edit, a message, a tool call, the end of a turn) at INFO, on the logger
``watcherd.agent``.

INFO, not DEBUG: the journal then shows that jobs are moving and what their agents run,
an audit trail the agent cannot rewrite afterwards (it can rewrite its own events.jsonl),
at one line per step. The text is the agent's: events.step_line makes one line of it, cut,
with control characters removed. The logger's name tells them from the daemon's own lines.
"""

from __future__ import annotations

import logging
from pathlib import Path

from watcherd.job.eventfile import EventReader
from watcherd.job.events import step_line

log = logging.getLogger("watcherd.agent")


class StepLog:
    def __init__(self, job_id: str, events_path: Path) -> None:
        self.job_id = job_id
        # From the end: an adopted job's earlier steps were logged by the daemon that
        # started it, and a fresh attempt's file is empty until its model first answers.
        self._reader = EventReader(events_path, from_end=True)

    def poll(self) -> None:
        """Log the steps written since the last poll. Never raises: a job's thread must
        not stop over what its agent wrote."""
        try:
            for event in self._reader.read():
                line = step_line(event)
                if line is not None:
                    log.info("job %s: %s", self.job_id, line)
        except Exception:  # the file is the agent's: nothing in it may break the job
            log.debug("job %s: reading its events failed", self.job_id, exc_info=True)
