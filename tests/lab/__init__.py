"""Simulated KVM hosts running real QEMU guests, for the demo and the tests.

    from tests.lab import Lab
    lab = Lab(name="test", hosts=("kvm01", "kvm02"), no_bridge_on=())
    lab.up(); ...; lab.down()

Command line: ``python -m tests.lab up|down|status``.
"""

from .lab import Lab, LabError, default_name, state_root, tcp_reachable

__all__ = ["Lab", "LabError", "default_name", "state_root", "tcp_reachable"]
