"""What the apps and the worker share about RQ's jobs."""

# The statuses of a job that will still run, or runs now: a job in none of
# them ran already, failed, or was lost.
WAITING = ("queued", "scheduled", "deferred", "started")
