"""Inventories for libvirt's built-in test driver.

libvirt's test driver reads a whole host (domains, networks, pools) from an
XML file given in the URI, ``test:///path/to/node.xml``. Tests and the
benchmark write such files to get hosts of any size, still read through real
libvirt.
"""

import uuid
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

# libvirt's virDomainState numbers, as the test driver's <test:runstate> wants them.
RUNSTATES = {"running": 1, "paused": 3, "shutoff": 5, "crashed": 6}


def domain_uuid(host, index):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kvmweb-test/{host}/{index}"))


def mac_for(uuid_str):
    """A stable MAC: without one libvirt invents a new one at every read, as no real host does."""
    raw = uuid.UUID(uuid_str).bytes
    return "52:54:00:%02x:%02x:%02x" % (raw[0], raw[1], raw[2])


def domain_xml(
    name,
    uuid_str,
    state="running",
    memory_mib=512,
    vcpus=1,
    disk=None,
    bridge="br0",
    current_mib=None,
    hugepage_kib=0,
):
    """A test-driver domain; ``current_mib``: what the balloon left it, below ``memory_mib``."""
    disk = disk or f"/var/lib/libvirt/images/{name}.qcow2"
    backing = (
        f"<memoryBacking><hugepages><page size='{hugepage_kib}' unit='KiB'/></hugepages></memoryBacking>"
        if hugepage_kib
        else ""
    )
    return f"""
  <domain type='test'>
    <name>{escape(name)}</name>
    <uuid>{uuid_str}</uuid>
    <memory unit='MiB'>{memory_mib}</memory>
    <currentMemory unit='MiB'>{current_mib or memory_mib}</currentMemory>
    {backing}
    <vcpu>{vcpus}</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file={quoteattr(disk)}/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <interface type='bridge'>
        <mac address='{mac_for(uuid_str)}'/>
        <source bridge={quoteattr(bridge)}/>
        <model type='virtio'/>
      </interface>
    </devices>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>{RUNSTATES[state]}</test:runstate>
  </domain>"""


# The test driver gives every pool 100 GiB, less what its volumes hold.
POOL_GIB = 100


def pool_xml(host, name, path, free_gib=POOL_GIB, volumes=()):
    """A directory pool of ``host`` with ``free_gib`` free; ``volumes``: (file name,
    capacity GiB, allocation GiB) tuples, at ``path``/file name (a domain's disk
    there is in this pool). A volume ``filler.img`` takes up the rest."""
    filler = POOL_GIB - free_gib - sum(alloc for _name, _cap, alloc in volumes)
    if filler > 0:
        volumes = [*volumes, ("filler.img", filler, filler)]
    vols = "".join(
        f"<volume><name>{escape(v)}</name><capacity unit='GiB'>{cap}</capacity>"
        f"<allocation unit='GiB'>{alloc}</allocation></volume>"
        for v, cap, alloc in volumes
    )
    return f"""  <pool type='dir'>
    <name>{escape(name)}</name>
    <uuid>{uuid.uuid5(uuid.NAMESPACE_URL, f"kvmweb-test/{host}/pool/{name}")}</uuid>
    <target><path>{escape(path)}</path></target>{vols}
  </pool>"""


def node_xml(host, domains=(), pool_path="/var/lib/libvirt/images", cpu_model="i686", memory_mib=16384, pools=None):
    """A test-driver host. ``domains``: (name, uuid, state) tuples or domain XML strings;
    ``pools``: pool_xml strings, instead of one pool ``local`` at ``pool_path``."""
    parts = [
        "<node>",
        f"  <cpu><mhz>2400</mhz><model>{cpu_model}</model><active>4</active><cpus>4</cpus></cpu>",
        # The test driver reads a node's memory in KiB, whatever the unit says.
        f"  <memory>{memory_mib * 1024}</memory>",
        f"""  <network>
    <name>lab-net</name>
    <uuid>{uuid.uuid5(uuid.NAMESPACE_URL, f"kvmweb-test/{host}/net")}</uuid>
    <forward mode='bridge'/>
    <bridge name='br0'/>
  </network>""",
    ]
    if pools is None:
        parts.append(f"""  <pool type='dir'>
    <name>local</name>
    <uuid>{uuid.uuid5(uuid.NAMESPACE_URL, f"kvmweb-test/{host}/pool")}</uuid>
    <capacity unit='GiB'>100</capacity>
    <allocation unit='GiB'>10</allocation>
    <available unit='GiB'>90</available>
    <target><path>{escape(pool_path)}</path></target>
  </pool>""")
    else:
        parts.extend(pools)
    for d in domains:
        if isinstance(d, str):
            parts.append(d)
        else:
            name, uuid_str, state = d
            parts.append(domain_xml(name, uuid_str, state))
    parts.append("</node>")
    return "\n".join(parts)


def write_host(directory, host, count=0, domains=None, **kwargs):
    """Write ``host``'s node file with ``count`` generated domains; return its URI."""
    if domains is None:
        domains = [(f"{host}-vm{i:03d}", domain_uuid(host, i), "running" if i % 3 else "shutoff") for i in range(count)]
    path = Path(directory) / f"{host}.xml"
    path.write_text(node_xml(host, domains, **kwargs))
    return f"test://{path}"
