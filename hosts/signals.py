"""What inventory sync tells the rest of kvmweb, without importing it.

``hosts`` never imports ``migrations_app``; the audit log and the live
dashboard live there and listen to these.
"""

from django.dispatch import Signal

# A VM turned up running on another host than the one it was on:
# domain, source (Host), target (Host), seen_at. Sent inside the sync's transaction.
domain_moved = Signal()

# A VM runs on several hosts at once, or no longer does:
# domain, hosts (names it runs on), seen_at. Sent inside the sync's transaction.
split_brain_changed = Signal()

# The inventory changed: hosts (names), domains (Domain ids that changed or
# went away). Sent after the transaction commits.
inventory_changed = Signal()

# An operator removed a stale definition: domain, host, user. Sent inside the transaction.
definition_removed = Signal()

# An operator removed a leftover volume: host, leftover (volumes.Leftover), user. Sent inside a transaction.
volume_removed = Signal()

# An operator registered a host: host, user. Sent before its first sync.
host_registered = Signal()

# An operator confirmed a host's SSH host key: host, user. Sent once it is trusted and saved.
host_key_confirmed = Signal()
