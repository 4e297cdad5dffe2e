"""The capacity model's figures: pure (no database, no libvirt).

``Capacity`` is one host's committed figures against what it can hold; ``of``
makes it from a host that hosts/capacity.py fetched with its annotations. The
model (``Host.capacity``) and the capacity queries both use this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core.formatting import size

MiB = 1024 * 1024


@dataclass(frozen=True)
class Guest:
    """What a guest needs of the host that runs it."""

    name: str
    max_memory: int  # bytes
    vcpus: int = 1
    hugepage_kib: int = 0

    @classmethod
    def of(cls, domain: Any) -> Guest:
        """From a Domain row, or a libvirt DomainInfo."""
        return cls(domain.name, domain.max_memory or domain.memory, domain.vcpus, domain.hugepage_kib)


@dataclass(frozen=True)
class Capacity:
    """One host's figures; the pure part of the model (no database, no libvirt)."""

    memory_total: int  # bytes, as the host's kernel counts them
    memory_reserved: int  # bytes kept for the host itself
    hugepage_pool: int  # bytes set aside as huge pages (part of memory_total)
    memory_ratio: float
    memory_committed: int  # bytes promised to guests not backed by huge pages
    cpu_count: int
    cpu_ratio: float
    vcpus_committed: int
    incoming: int = 0  # guests on their way in, counted in the committed figures
    memory_incoming: int = 0  # bytes of memory_committed that are on their way in

    @property
    def memory_capacity(self) -> int:
        return max(0, int((self.memory_total - self.memory_reserved - self.hugepage_pool) * self.memory_ratio))

    @property
    def memory_room(self) -> int:
        """What can still be promised; negative when the host is over-committed."""
        return self.memory_capacity - self.memory_committed

    @property
    def memory_over(self) -> int:
        """By how much the host is over-committed; 0 when it is not."""
        return max(0, -self.memory_room)

    @property
    def memory_percent(self) -> int:
        """Committed against capacity, in percent (may exceed 100)."""
        if not self.memory_capacity:
            return 100 if self.memory_committed else 0
        return round(100 * self.memory_committed / self.memory_capacity)

    @property
    def bar(self) -> dict[str, int]:
        """Widths for a bar of the capacity: what runs here and what is on its way, in percent."""
        full = self.memory_capacity or 1
        running = min(100, round(100 * (self.memory_committed - self.memory_incoming) / full))
        return {"running": running, "incoming": min(100 - running, round(100 * self.memory_incoming / full))}

    @property
    def summary(self) -> str:
        """The bar's words, the same on the page and in the dashboard's live updates."""
        words = f"{size(self.memory_committed)} committed of {size(self.memory_capacity)} ({self.memory_percent} %)"
        if self.incoming:
            many = "s" if self.incoming > 1 else ""
            words += f" · {size(self.memory_incoming)} on {self.incoming} migration{many} on the way in"
        if self.memory_over:
            words += f" · over by {size(self.memory_over)}"
        return words

    def as_bar(self) -> dict[str, Any]:
        """What the dashboard's script needs to redraw the bar: widths, colour, words."""
        return {**self.bar, "level": self.level, "summary": self.summary}

    @property
    def level(self) -> str:
        """The bar's colour: full (nothing more fits), filling, or fine."""
        if self.memory_committed and self.memory_room <= 0:
            return "red"
        return "orange" if self.memory_percent >= 90 else ""

    @property
    def vcpu_capacity(self) -> int:
        return int(self.cpu_count * self.cpu_ratio)

    def memory_fits(self, guest: Guest) -> bool:
        if guest.hugepage_kib:
            return True  # its memory comes from the huge page pool: see HugePages
        return self.memory_committed + guest.max_memory <= self.memory_capacity

    def vcpus_fit(self, guest: Guest) -> bool:
        return self.vcpus_committed + guest.vcpus <= self.vcpu_capacity


# ``host``: a Host (typed Any: this module does not import the models).


def memory_reserved(host: Any) -> int:
    mib = host.memory_reserved_mib
    return int(settings.KVMWEB_RESERVED_MEMORY_MIB if mib is None else mib) * MiB


def memory_ratio(host: Any) -> float:
    return float(settings.KVMWEB_MEMORY_ALLOCATION_RATIO if host.memory_ratio is None else host.memory_ratio)


def cpu_ratio(host: Any) -> float:
    return float(settings.KVMWEB_CPU_ALLOCATION_RATIO if host.cpu_ratio is None else host.cpu_ratio)


def hugepage_pool(host: Any) -> int:
    """Bytes the host has set aside as huge pages, all sizes."""
    return sum(int(size) * 1024 * pages for size, pages in (host.hugepages or {}).items())


def of(host: Any) -> Capacity:
    """The capacity of a host fetched with ``with_committed()`` (its annotations: hence Any)."""
    return Capacity(
        memory_total=host.memory_total,
        memory_reserved=memory_reserved(host),
        hugepage_pool=hugepage_pool(host),
        memory_ratio=memory_ratio(host),
        memory_committed=host.memory_committed,
        cpu_count=host.cpu_count,
        cpu_ratio=cpu_ratio(host),
        vcpus_committed=host.vcpus_committed,
        incoming=host.incoming_count,
        memory_incoming=host.memory_incoming,
    )


def choose_copy_pool(free: dict[str, int], need: int, prefer: str = "") -> str | None:
    """Which pool (name -> free bytes) to copy ``need`` bytes of disks into: the
    one named ``prefer`` (the source's) if it has room, else the one with the
    most room that has it; None if none has. Pure: the planner uses it too."""
    fits = [name for name, room in free.items() if room >= need]
    if prefer in fits:
        return prefer
    return min(fits, key=lambda name: (-free[name], name), default=None)
