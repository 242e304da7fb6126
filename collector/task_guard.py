"""Background loops that survive their own errors (issue 12).

The daemon's periodic jobs (prune, size bound, checkpoint, write health, workflow tick,
metrics) run beside the drivers in one task group. An exception escaping one of them
used to end the group, i.e. the daemon (exit 1), losing every row still queued in
memory; under systemd it then restarted into the same fault (a full disk) and died again
every few minutes. Now each loop reports every round to a :class:`TaskGuard`:

- a failure is counted (``task_failures`` in /health, per task) and logged once per
  episode (again only if the error text changes), and the collector alarm
  ``task_failed`` (``{root}/_collector/{host}/alarm``, data ``task``, ``error``,
  ``failures``) is raised;
- the first round that works again logs the recovery and clears the alarm.

The loop itself goes on with its normal period, so a prune that failed on a full disk
simply prunes at its next round once there is space.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

AlarmFn = Callable[[str, bool, dict[str, object]], None]


class TaskGuard:
    """Failure episodes of the daemon's background loops (one instance per daemon)."""

    def __init__(self, alarm: AlarmFn, failures: dict[str, int]) -> None:
        self._alarm = alarm  # (kind, active, data) -> queue a collector alarm
        self.failures = failures  # shared with /health task_failures
        self._episodes: dict[str, str] = {}  # task -> last error text (failing now)

    def failing(self, task: str) -> bool:
        return task in self._episodes

    def failed(self, task: str, exc: BaseException | str) -> None:
        """One round of ``task`` failed: count it; log and alarm once per episode."""
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.failures[task] = self.failures.get(task, 0) + 1
        previous = self._episodes.get(task)
        self._episodes[task] = text
        if previous == text:
            return
        if previous is None:
            log.error("background task %s failed (%s); it keeps running and retries at its "
                      "next round; collector alarm task_failed raised", task, text)
            self._raise(task, True, text)
        else:
            log.error("background task %s still failing, now: %s", task, text)

    def ok(self, task: str) -> None:
        """One round of ``task`` worked: end its failure episode, if any."""
        text = self._episodes.pop(task, None)
        if text is not None:
            log.warning("background task %s works again (after: %s); alarm cleared", task, text)
            self._raise(task, False, text)

    def _raise(self, task: str, active: bool, text: str) -> None:
        try:
            self._alarm("task_failed", active, {"task": task, "error": text[:500],
                                                "failures": self.failures.get(task, 0)})
        except Exception:  # the outbox is closing: the log line above is what is left
            log.exception("could not queue the task_failed alarm of %s", task)
