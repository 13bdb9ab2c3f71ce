"""Publishing a job's result: its branch pushed to its forge and a pull request opened, by
the daemon after the job is filed, with a credential no job ever sees (README "Publishing").
"""

from watcherd.publish.publisher import Publisher, publish_job, request_publish
from watcherd.publish.requests import wait_for_outcome

__all__ = ["Publisher", "publish_job", "request_publish", "wait_for_outcome"]
