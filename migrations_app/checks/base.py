"""What every family of checks shares: the three results, a check's result,
the list they are added to, and the input every check reads.

The input (``CheckInput``) is built once per pre-flight, from a
MigrationRequest (a dry run, the form) or a Migration (the engine), and is
frozen: no check changes what the next one reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..models import Migration

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails
    from hosts.models import Host

    from ..request import MigrationRequest

PASS, WARN, FAIL = "pass", "warn", "fail"
MiB = 1024 * 1024

# Every check's name (part of the API) and the words the pages show for it, in the order they run.
LABELS = {
    "single_copy": "Runs on one host only",
    "source_reachable": "Source answers",
    "target_reachable": "Target answers",
    "domain_state": "VM state",
    "target_hostname": "Target host name",
    "peer_login": "Source can log in to the target",
    "architecture": "Architecture",
    "cpu_vendor": "CPU vendor",
    "cpu_model": "Guest CPU on the target",
    "nx_flag": "NX flag",
    "name_clash": "Name and UUID free",
    "networks": "Bridges and networks",
    "storage": "Disks",
    "shared_storage": "Shared storage",
    "target_pool": "Target pool",
    "free_space": "Free space",
    "target_volumes": "Target volume names",
    "memory": "Memory",
    "hugepages": "Huge pages",
    "vcpus": "vCPUs",
    "maintenance": "Target not in maintenance",
    "placement_rules": "Placement rules",
    "convergence": "Will it converge?",
    "prediction": "Prediction",
    "migration_tls": "Migration stream over TLS",
    "removable_media": "Removable media",
    "consoles": "Consoles and serial ports",
    "host_devices": "Passed-through devices",
    "macvtap": "Direct (macvtap) interfaces",
    "pinning": "CPU and NUMA pinning",
    "backing_chain": "Backing files",
    "snapshots": "Snapshots",
    "firmware": "UEFI and TPM state",
}


@dataclass
class CheckResult:
    name: str
    result: str  # pass, warn, fail
    message: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": LABELS.get(self.name, self.name.replace("_", " ").capitalize())}


@dataclass
class Checks:
    """The results so far, in the order the checks added them."""

    results: list[CheckResult] = field(default_factory=list)

    def add(self, name: str, result: str, message: str, detail: object = "") -> None:
        self.results.append(CheckResult(name, result, message, str(detail or "")))


@dataclass(frozen=True)
class CheckInput:
    """What the checks know of the request: the VM, the two hosts and the request's fields."""

    uuid: str
    name: str
    source: Host
    target: Host
    mode: str
    storage: str
    target_pool: str = ""
    bandwidth_mib: int | None = None
    policy: str = ""
    force_off: bool = False
    shutdown_timeout: int = 120
    eject_media: bool = False
    rule_override: str = ""
    # The migration being checked (the engine's own instance: a note written
    # through another would be lost when the engine writes its next one);
    # None for a request not made yet (a dry run, the form).
    record: Migration | None = None

    @property
    def migration_id(self) -> int | None:
        return self.record.pk if self.record is not None else None

    @classmethod
    def of(cls, req: MigrationRequest | Migration) -> CheckInput:
        if isinstance(req, Migration):
            if req.source is None or req.target is None:
                raise ValueError(f"Migration #{req.pk} has lost its source or target host: nothing to check.")
            uuid, name, source, target, record = str(req.domain_uuid), req.domain_name, req.source, req.target, req
        else:
            uuid, name, source, target, record = (
                str(req.domain.uuid),
                req.domain.name,
                req.domain.host,
                req.target,
                None,
            )
        return cls(
            uuid=uuid,
            name=name,
            source=source,
            target=target,
            mode=req.mode,
            storage=req.storage,
            target_pool=req.target_pool,
            bandwidth_mib=req.bandwidth_mib,
            policy=req.policy,
            force_off=req.force_off,
            shutdown_timeout=req.shutdown_timeout,
            eject_media=req.eject_media,
            rule_override=req.rule_override,
            record=record,
        )


class Check(Protocol):
    """One check of a family: adds its results to ``checks``; a HostError it raises
    is reported under its name (``check_`` taken off)."""

    __name__: str

    def __call__(
        self, checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection
    ) -> None: ...
