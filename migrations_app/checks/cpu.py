"""The CPU: architecture, vendor, the guest's CPU model and the NX flag
(the usual reasons a moved guest crashes or does not start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hosts.libvirt import CpuComparison

from ..models import Mode
from .base import FAIL, PASS, WARN, CheckInput, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails


def check_arch(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    src, dst = v.source, v.target
    arches = target.guest_arches(dom.virt_type)
    if dom.arch and dom.arch not in arches:
        checks.add(
            "architecture",
            FAIL,
            f"{v.name} is a {dom.arch} guest, and {dst.name} cannot run {dom.arch} guests "
            f"({dom.virt_type}); it runs {', '.join(sorted(arches)) or 'none'}.",
        )
    elif src.cpu_arch and dst.cpu_arch and src.cpu_arch != dst.cpu_arch:
        checks.add(
            "architecture",
            WARN,
            f"The hosts differ ({src.cpu_arch} and {dst.cpu_arch}); the target can still run {dom.arch} guests.",
        )
    else:
        checks.add("architecture", PASS, f"Both hosts run {dom.arch or src.cpu_arch} guests.")


def check_cpu_vendor(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    src, dst = v.source, v.target
    if src.cpu_vendor == dst.cpu_vendor:
        checks.add("cpu_vendor", PASS, f"Both hosts have {src.cpu_vendor or 'the same'} CPUs.")
    elif dom.cpu_mode == "host-passthrough" and v.mode == Mode.LIVE:
        checks.add(
            "cpu_vendor",
            FAIL,
            f"The hosts' CPUs are from different vendors ({src.cpu_vendor}, {dst.cpu_vendor}) and "
            f"{v.name} sees the host CPU as it is (host-passthrough): it would crash after a "
            "live move. Migrate it cold, or give it a named CPU model.",
        )
    else:
        checks.add(
            "cpu_vendor",
            WARN,
            f"The hosts' CPUs are from different vendors ({src.cpu_vendor}, {dst.cpu_vendor}). "
            "The guest CPU model check below decides whether it can run there.",
        )


def check_cpu_model(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    if dom.cpu_mode in ("", None):
        checks.add(
            "cpu_model", PASS, "The guest uses the hypervisor's default CPU model, which any host of this kind runs."
        )
        return
    if dom.cpu_mode == "host-passthrough":
        verdict, detail = target.compare_host_cpu(v.source.cpu_xml)
        if verdict in (CpuComparison.IDENTICAL, CpuComparison.SUPERSET):
            same = verdict == CpuComparison.IDENTICAL
            checks.add(
                "cpu_model",
                PASS if same else WARN,
                "The guest sees the source's CPU as it is; the target's CPU "
                + ("is the same." if same else "has at least its features."),
                detail,
            )
        else:
            checks.add(
                "cpu_model",
                FAIL,
                "The guest sees the source's CPU as it is (host-passthrough), and the target's "
                "CPU lacks some of its features. Migrate it cold.",
                detail,
            )
        return
    verdict, detail = target.compare_guest_cpu(dom.cpu_xml, dom.arch, dom.machine, dom.virt_type)
    if verdict in (CpuComparison.IDENTICAL, CpuComparison.SUPERSET):
        checks.add("cpu_model", PASS, "libvirt confirms the target can provide the guest's CPU model.", detail)
    else:
        checks.add(
            "cpu_model",
            FAIL if v.mode == Mode.LIVE else WARN,
            "The target cannot provide the guest's CPU model and features"
            + (
                ": the guest would not survive a live move. Choose a host with the same CPU "
                "generation, or give the guest an older CPU model."
                if v.mode == Mode.LIVE
                else "; the guest may not start there."
            ),
            detail,
        )


def check_nx(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    src, dst = v.source, v.target
    if not (src.cpu_xml and dst.cpu_xml):
        checks.add("nx_flag", WARN, "kvmweb does not know both hosts' CPU flags yet: sync them.")
        return
    a = "nx" in source.cpu_features(src.cpu_xml)
    b = "nx" in target.cpu_features(dst.cpu_xml)
    if a == b:
        checks.add("nx_flag", PASS, f"The NX flag is {'on' if a else 'off'} on both hosts.")
    else:
        checks.add(
            "nx_flag",
            FAIL if v.mode == Mode.LIVE else WARN,
            f"The NX (no-execute) flag is {'on' if a else 'off'} on {src.name} but "
            f"{'on' if b else 'off'} on {dst.name}. Set it the same in both hosts' firmware.",
        )
