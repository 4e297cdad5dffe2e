"""What a migration and an evacuation have in common: a request carried out
over time, with a status that moves only forward, and when it was asked for,
started and finished.

Each change of status is a conditional UPDATE that names the states it may
leave, so two processes (two workers, or a worker and a cancel request) can
never both move the same row on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypedDict, TypeVar

from django.db import models
from django.utils import timezone

# The badge colour of every status a migration or an evacuation can have.
STATUS_COLOURS = {
    "queued": "grey",
    "checking": "blue",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "orange",
}


F = TypeVar("F", bound=Callable[..., Any])


def alters_data(method: F) -> F:
    """Mark a method that writes (Django's ``alters_data``), so that a template cannot call it."""
    method.alters_data = True  # type: ignore[attr-defined]  # the attribute Django's templates read
    return method


class InvalidTransition(Exception):
    """The row is no longer in a state the change may leave."""


class Timestamps(TypedDict):
    created_at: str | None  # ISO 8601
    started_at: str | None
    finished_at: str | None


class TrackedRequest(models.Model):
    # The statuses in which the request is still being carried out.
    ACTIVE: ClassVar[tuple[str, ...]] = ()
    # Each concrete model declares its own field, with its own choices.
    status: str

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def status_colour(self) -> str:
        return STATUS_COLOURS[self.status]

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @alters_data
    def _transition(self, allowed_from: Iterable[str], **changes: Any) -> None:
        """Write ``changes`` only if the row is still in one of ``allowed_from``."""
        changes["updated_at"] = timezone.now()
        rows = (
            type(self)._default_manager.filter(pk=self.pk, status__in=allowed_from).update(**changes)  # type: ignore[misc]  # status: the concrete model's field
        )
        if rows != 1:
            self.refresh_from_db()
            going = f"; cannot go to {changes['status']}" if "status" in changes else ""
            raise InvalidTransition(f"{str(self._meta.verbose_name).capitalize()} #{self.pk} is {self.status}{going}.")
        for name, value in changes.items():
            setattr(self, name, value)

    def timestamps(self) -> Timestamps:
        """When it was asked for, started and finished, as the live payloads carry them."""
        return {
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }
