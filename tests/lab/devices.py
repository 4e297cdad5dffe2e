"""Devices real VMs carry, as XML for ``Lab.make_guest(extra_devices=..., os_extra=...)``.

The lab's guests are bare; these give them what installers and administrators
add (a CD-ROM, VNC, a serial port on TCP, a qcow2 backing chain, UEFI with
Debian's ``ovmf``, an emulated TPM with Debian's ``swtpm``), so tests can show
what a migration does with each.
"""

from xml.sax.saxutils import quoteattr

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


def cdrom(path, target="sdc"):
    return (
        "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
        f"<source file={quoteattr(path)}/><target dev='{target}' bus='sata'/><readonly/></disk>"
    )


def vnc(listen, port=None, passwd=None):
    """VNC bound to one address, as installers write it (autoport unless ``port``; a password if ``passwd``)."""
    ports = f"port='{port}' autoport='no'" if port else "autoport='yes'"
    password = f" passwd={quoteattr(passwd)}" if passwd else ""
    return (
        f"<graphics type='vnc' {ports}{password} listen={quoteattr(listen)}>"
        f"<listen type='address' address={quoteattr(listen)}/></graphics>"
    )


def serial_tcp(host, port, target_port=1):
    """A second serial port that listens on TCP (``telnet host port`` reaches it)."""
    return (
        "<serial type='tcp'>"
        f"<source mode='bind' host={quoteattr(host)} service='{int(port)}'/>"
        f"<protocol type='raw'/><target port='{int(target_port)}'/></serial>"
    )


def disk(path, fmt="qcow2", target="vdb"):
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source file={quoteattr(path)}/><target dev='{target}' bus='virtio'/></disk>"
    )


def tpm():
    """An emulated TPM 2.0: libvirt starts swtpm for it and keeps its state under /var/lib/libvirt/swtpm."""
    return "<tpm model='tpm-tis'><backend type='emulator' version='2.0'/></tpm>"


def uefi():
    """<os> children for UEFI: OVMF's code, and a per-VM NVRAM copied from its template."""
    return f"<loader readonly='yes' type='pflash'>{OVMF_CODE}</loader><nvram template='{OVMF_VARS}'/>"


def volume(conn, pool, name, mib=16, fmt="qcow2", backing=None):
    """Create a volume in a pool of a lab host (``backing``: the path of its backing file); return its path."""
    backing_xml = f"<backingStore><path>{backing}</path><format type='qcow2'/></backingStore>" if backing else ""
    p = conn.storagePoolLookupByName(pool)
    p.refresh(0)
    vol = p.createXML(
        f"<volume><name>{name}</name><capacity unit='MiB'>{mib}</capacity>"
        f"<target><format type='{fmt}'/></target>{backing_xml}</volume>",
        0,
    )
    return vol.path()
