"""Which functions the worker runs: kvmweb's own jobs, nothing else.

Jobs are JSON (settings.RQ_SERIALIZER), so what sits in Redis cannot be a
pickle; but a JSON job still names a function, and RQ imports and calls
whatever it names ("os.system" with a command as its argument). Whoever can
write to kvmweb's Redis (a shared Redis, a leaked password) could then run
anything as the worker's user. This job class refuses, before importing
anything, every function not listed here, every method of an instance, and
every callback (kvmweb uses none): such a job fails with a plain message.
"""

import logging
from typing import Any

from rq.job import Job

log = logging.getLogger(__name__)

# Every function kvmweb enqueues. A new job function must be added here, or the
# worker refuses it (tests/test_redis_writer.py shows a foreign one is refused).
ALLOWED_JOBS = frozenset(
    {
        "kvmweb.worker.refresh_inventory",
        "kvmweb.worker.reconcile_periodically",
        "migrations_app.jobs.run_migration",
        "migrations_app.jobs.reconcile_migration",
        "migrations_app.jobs.measure_domain",
        "maintenance.runner.advance",
        "maintenance.rolling.advance",
        # The name the evacuation job had before evacuations ran in steps; a
        # job queued by an older kvmweb still says it (it is advance now).
        "maintenance.runner.run_evacuation",
    }
)


class ForeignJob(Exception):
    """A queued job that kvmweb did not write."""


class KvmwebJob(Job):
    """RQ's job, limited to the functions in ALLOWED_JOBS."""

    @property
    def func(self) -> Any:
        name = self.func_name
        if self.instance is not None or name not in ALLOWED_JOBS:
            log.error("refused job %s: %r is not one of kvmweb's jobs", self.id, name)
            raise ForeignJob(f"{name!r} is not one of kvmweb's jobs; it was not run.")
        return super().func

    # Callbacks are imported and called like the job's function.
    @property
    def success_callback(self) -> Any:
        return self._no_callback(self._success_callback_name)

    @property
    def failure_callback(self) -> Any:
        return self._no_callback(self._failure_callback_name)

    @property
    def stopped_callback(self) -> Any:
        return self._no_callback(self._stopped_callback_name)

    def _no_callback(self, name: str | None) -> None:
        if name:
            log.error("ignored the callback %r of job %s: kvmweb's jobs have none", name, self.id)
        return None
