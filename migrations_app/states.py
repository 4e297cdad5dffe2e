"""A migration's statuses, modes and phases: the names its model and what
reads a migration without importing the model (waiting.py) share."""

from django.db import models


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    CHECKING = "checking", "Checking"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE = (Status.QUEUED, Status.CHECKING, Status.RUNNING)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class Mode(models.TextChoices):
    LIVE = "live", "Live (the VM keeps running)"
    COLD = "cold", "Cold (shut down, copy, start)"


class StorageMode(models.TextChoices):
    SHARED = "shared", "Shared storage (disks stay where they are)"
    COPY = "copy", "Copy the disks to the target"


class Phase(models.TextChoices):
    NONE = "", "—"
    WAITING = "waiting", "Waiting for a free slot"
    CHECKING = "checking", "Pre-flight checks"
    PREPARING = "preparing", "Preparing the target"
    SHUTTING_DOWN = "shutting_down", "Shutting down"
    COPYING_DISK = "copying_disk", "Copying disks"
    VERIFYING = "verifying", "Verifying the copy"
    TRANSFERRING_MEMORY = "transferring_memory", "Transferring memory"
    # Post-copy lost its link: paused on both sides, waiting to resume (engine.postcopy).
    POSTCOPY_INTERRUPTED = "postcopy_interrupted", "Post-copy interrupted"
    SWITCHING_OVER = "switching_over", "Switching over"
    DEFINING = "defining", "Defining on the target"
    STARTING_ON_TARGET = "starting_on_target", "Starting on the target"
    CLEANING_UP = "cleaning_up", "Cleaning up"
    DONE = "done", "Done"
