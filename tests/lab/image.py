"""The guest's kernel and initramfs, made once and cached.

Kernel: Debian's ``linux-image-cloud-amd64`` (fetched with ``apt-get download``
and unpacked with ``dpkg -x``, never installed). Initramfs: ``busybox-static``,
``guest/init.sh`` as ``/init`` and ``guest/dirty.c`` built with ``gcc -static``.
The initramfs file name carries a hash of its inputs, so a change to any of
them makes a new one.
"""

import fcntl
import glob
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST_SRC = os.path.join(HERE, "guest")
KERNEL_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = "/bin/busybox"
FORMAT_VERSION = "2"  # bump when the way the initramfs is laid out changes
# Built as modules in the cloud kernel; the guest loads them so that an ACPI
# power button press (virsh shutdown) reaches busybox's acpid.
MODULES = ("kernel/drivers/input/evdev.ko", "kernel/drivers/acpi/button.ko")


def cache_dir():
    return os.environ.get("KVMWEB_LAB_CACHE", "/var/cache/kvmweb-lab")


def guest_kernel():
    """Return (kernel_path, initrd_path), building what is missing."""
    root = cache_dir()
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kernel = _kernel(root)
        return kernel, _initrd(root, _modules_dir(kernel))


def _modules_dir(kernel):
    return kernel.replace("vmlinuz-", "modules-")


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)


def _kernel(root):
    found = sorted(glob.glob(os.path.join(root, "vmlinuz-*")))
    if found and all(os.path.exists(os.path.join(_modules_dir(found[-1]), os.path.basename(m))) for m in MODULES):
        return found[-1]
    package = _kernel_package()
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            _run(["apt-get", "download", package], cwd=tmp)
        except subprocess.CalledProcessError:
            # Package lists missing or stale: refresh once and retry.
            _run(["apt-get", "update"])
            package = _kernel_package()
            _run(["apt-get", "download", package], cwd=tmp)
        deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
        _run(["dpkg", "-x", deb, os.path.join(tmp, "x")])
        vmlinuz = glob.glob(os.path.join(tmp, "x", "boot", "vmlinuz-*"))[0]
        dest = os.path.join(root, os.path.basename(vmlinuz))
        modules = _modules_dir(dest)
        os.makedirs(modules, exist_ok=True)
        for module in MODULES:
            found = glob.glob(os.path.join(tmp, "x", "lib", "modules", "*", module))[0]
            shutil.copyfile(found, os.path.join(modules, os.path.basename(module)))
        shutil.copyfile(vmlinuz, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
    return dest


def _kernel_package():
    """The versioned image package the meta-package points at."""
    try:
        out = _run(["apt-cache", "depends", KERNEL_PACKAGE]).stdout
    except subprocess.CalledProcessError:
        out = ""
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    _run(["apt-get", "update"])
    out = _run(["apt-cache", "depends", KERNEL_PACKAGE]).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise RuntimeError("cannot resolve %s with apt-cache" % KERNEL_PACKAGE)


def _inputs():
    with open(os.path.join(GUEST_SRC, "init.sh"), "rb") as f:
        init = f.read()
    with open(os.path.join(GUEST_SRC, "dirty.c"), "rb") as f:
        dirty_c = f.read()
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    return init, dirty_c, busybox


def _initrd(root, modules_dir):
    init, dirty_c, busybox = _inputs()
    modules = {}
    for module in MODULES:
        name = os.path.basename(module)
        with open(os.path.join(modules_dir, name), "rb") as f:
            modules[name] = f.read()
    digest = hashlib.sha256()
    for part in (FORMAT_VERSION.encode(), init, dirty_c, busybox, *modules.values()):
        digest.update(hashlib.sha256(part).digest())
    dest = os.path.join(root, "initrd-%s.img" % digest.hexdigest()[:16])
    if os.path.exists(dest):
        return dest
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        src = os.path.join(tmp, "dirty.c")
        with open(src, "wb") as f:
            f.write(dirty_c)
        exe = os.path.join(tmp, "dirty")
        _run(["gcc", "-static", "-O2", "-s", "-o", exe, src])
        with open(exe, "rb") as f:
            dirty = f.read()
    archive = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "root", "etc", "modules"):
        archive.add(d, 0o40755)
    for name, data in modules.items():
        archive.add("modules/" + name, 0o100644, data)
    archive.add("dev/console", 0o20600, rdev=(5, 1))
    archive.add("dev/ttyS0", 0o20600, rdev=(4, 64))
    archive.add("bin/busybox", 0o100755, busybox)
    archive.add("bin/sh", 0o120777, b"busybox")
    archive.add("bin/dirty", 0o100755, dirty)
    archive.add("init", 0o100755, init)
    with open(dest + ".tmp", "wb") as f:
        f.write(gzip.compress(archive.finish(), compresslevel=6))
    os.replace(dest + ".tmp", dest)
    for old in glob.glob(os.path.join(root, "initrd-*.img")):
        if old != dest:
            os.unlink(old)
    return dest


class _Cpio:
    """Just enough of the newc format for an initramfs."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 300000

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        self.ino += 1
        name_b = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0)
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._write(header + name_b)
        self._write(data)

    def _write(self, data):
        self.buf.write(data)
        pad = (-self.buf.tell()) % 4
        self.buf.write(b"\0" * pad)

    def finish(self):
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()
