"""What inventory sync tells the rest of kvmweb, without importing it.

``hosts`` never imports the apps above it; the audit log (``migrations_app``)
and the live dashboard and VM pages (``dashboard``) listen to these.
"""

from django.dispatch import Signal

# A VM turned up running on another host than the one it was on:
# domain, source (Host), target (Host), seen_at. Sent inside the sync's transaction.
domain_moved = Signal()

# A VM runs on several hosts at once, or no longer does:
# domain, hosts (names it runs on), seen_at. Sent inside the sync's transaction.
split_brain_changed = Signal()

# The inventory changed: hosts (names), domains (Domain ids that changed or
# went away; none when only the hosts changed: see hosts_changed). Sent after
# the transaction commits.
inventory_changed = Signal()

# An operator removed a stale definition: domain, host, user. Sent inside the transaction.
definition_removed = Signal()

# An operator removed a leftover volume: host, leftover (volumes.Leftover), user. Sent inside a transaction.
volume_removed = Signal()

# A VM's page is being shown: domain. Each receiver may answer a dict that is
# added to the page's context (what the apps above know of the VM).
domain_page = Signal()

# An operator registered a host: host, user. Sent before its first sync.
host_registered = Signal()

# An operator confirmed a host's SSH host key: host, user. Sent once it is trusted and saved.
host_key_confirmed = Signal()


def hosts_changed(names: list[str]) -> None:
    """Say that these hosts changed though none of their VMs did: one went into
    maintenance or out of it, a migration between them ended. The dashboard
    shows their counts and badges again. Call it once the change is committed."""
    inventory_changed.send(sender=None, hosts=names, domains=[])
