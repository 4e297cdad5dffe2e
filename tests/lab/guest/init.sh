#!/bin/busybox sh
# /init of the lab's guest: print "tick N UPTIME" on the serial console every
# second; with dirty_mib=M [dirty_rate=R] on the kernel command line, also
# keep rewriting M MiB of memory at about R MiB/s (0: as fast as it can).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in /modules/*.ko; do insmod "$m" 2>/dev/null; done
dirty_mib=0
dirty_rate=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        dirty_mib=*) dirty_mib="${arg#dirty_mib=}" ;;
        dirty_rate=*) dirty_rate="${arg#dirty_rate=}" ;;
    esac
done
exec >/dev/ttyS0 2>&1 </dev/null
# A clean shutdown, as from 'virsh shutdown': the ACPI power button makes
# busybox's acpid run /etc/acpi/PWRF/00000080, which powers the guest off.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "guest shutting down"\nsync\npoweroff -f\n' >/etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
if ls /dev/input/event* >/dev/null 2>&1; then
    acpid -f -c /etc/acpi -l /dev/null &
    echo "acpid listening on $(ls /dev/input | tr '\n' ' ')"
else
    echo "no input devices: ACPI shutdown will not work"
fi
echo "lab guest up, dirty_mib=$dirty_mib dirty_rate=$dirty_rate"
if [ "$dirty_mib" -gt 0 ] 2>/dev/null; then
    /bin/dirty "$dirty_mib" "$dirty_rate" &
fi
n=0
while :; do
    n=$((n + 1))
    read -r uptime idle </proc/uptime
    echo "tick $n $uptime"
    sleep 1
done
