"""What a migration request is: its fields, their limits and their defaults,
written once.

The HTML form (forms.MigrationForm), the API (serializers.MigrationRequestSerializer),
the evacuations and the service that creates the Migration (services) all
take them from here, so a limit or a default changes in one place; a test
(tests/test_request_schema.py) holds the form and the API to it.

``dry_run`` is not part of a request: it says what to do with one (the API's
flag; the form's "Check first" button).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any

from .models import Mode, StorageMode
from .policies import DEFAULT_POLICY

if TYPE_CHECKING:
    from hosts.models import Domain, Host


@dataclass(frozen=True)
class Bounds:
    """The smallest and largest whole number a field takes."""

    min: int
    max: int


# Seconds a cold migration waits for the guest to shut down cleanly.
SHUTDOWN_TIMEOUT = Bounds(5, 3600)
# A bandwidth cap in MiB/s: at most beyond any link (~100 GiB/s), and far
# below what the database column or libvirt overflow at.
BANDWIDTH_MIB = Bounds(1, 100_000)
# Parallel connections for a live migration's memory (multifd): 0 is off; one
# connection is what "off" already means, and QEMU takes at most 255, far past
# what pays off on any link (and each costs a thread on both hosts).
PARALLEL_CONNECTIONS = Bounds(2, 16)
# The longest pool name libvirt keeps, as the Migration's column does.
TARGET_POOL_MAX_LENGTH = 255
POLICY_MAX_LENGTH = 32
RULE_OVERRIDE_MAX_LENGTH = 500


def parallel_connections_error(value: int | None) -> str:
    """Why a number of parallel connections is refused, or "" if it is good."""
    if value is None or value == 0 or PARALLEL_CONNECTIONS.min <= value <= PARALLEL_CONNECTIONS.max:
        return ""
    return (
        f"Parallel connections must be 0 (one connection) or from {PARALLEL_CONNECTIONS.min} to "
        f"{PARALLEL_CONNECTIONS.max}."
    )


@dataclass
class MigrationRequest:
    """One request to move ``domain`` to ``target``; what is not given takes
    the default written here."""

    domain: Domain
    target: Host
    mode: str = Mode.LIVE
    storage: str = StorageMode.SHARED
    # Copy storage: empty takes the default pool (services.default_target_pool).
    target_pool: str = ""
    policy: str = DEFAULT_POLICY
    bandwidth_mib: int | None = None  # None: no limit
    parallel_connections: int = 0  # 0: one connection (see PARALLEL_CONNECTIONS)
    shutdown_timeout: int = 120
    force_off: bool = False
    # Copy storage: keep the source's copy of the disks after a verified move
    # (by default it is removed, and a return may clear its own leftover first).
    keep_source_volumes: bool = False
    replace_own_leftovers: bool = False
    eject_media: bool = False
    # Why the operator moves it against a placement rule: the placement_rules
    # check then warns instead of failing, and the audit keeps the reason.
    rule_override: str = ""

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> MigrationRequest:
        """From a form's or a serializer's cleaned values (``target_host`` for
        the target); a value left empty takes its default."""
        values = {k: v for k, v in data.items() if k in FIELD_NAMES and v not in (None, "")}
        return cls(domain=data["domain"], target=data["target_host"], **values)


# Set by kvmweb's own plans (an evacuation's return), never by a form or the API:
# a user may not make kvmweb delete volumes on a target.
INTERNAL_FIELDS = frozenset({"replace_own_leftovers"})

FIELD_NAMES = frozenset(f.name for f in fields(MigrationRequest)) - {"domain", "target"} - INTERNAL_FIELDS

# Each optional field's default, for the form's initial values and the API's defaults.
DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(MigrationRequest) if f.name in FIELD_NAMES and f.default is not MISSING
}
