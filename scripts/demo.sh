#!/bin/sh
# Start or stop the kvmweb demo on this machine.
#
#   scripts/demo.sh start    # lab (or test driver), database, admin, hosts, guests; Redis, web, worker supervised
#   scripts/demo.sh stop     # the supervisor and what it runs (the lab stays up: make lab-down)
#   scripts/demo.sh status
#
# Called by `make demo` / `make stop` after the system packages and the
# virtualenv are in place. Settings come from the environment as in
# kvmweb/settings.py; besides those:
#   KVMWEB_BIND (127.0.0.1), KVMWEB_PORT (8000), KVMWEB_LAB_NAME (demo),
#   KVMWEB_REDIS_PORT (6379), KVMWEB_ADMIN_PASSWORD (default: a random one, printed once),
#   KVMWEB_WEBS (1): daphne processes serving the one address (supervisord binds it once).
#
# supervisord (Debian's `supervisor`) runs every line of the Procfile and,
# unless REDIS_URL names a Redis of your own, a Redis that requires a password
# generated once and kept in $KVMWEB_VAR_DIR/redis-url; it restarts any of
# them that dies. Logs, the database and that file stay in $KVMWEB_VAR_DIR
# (default var/), private to this account (umask 077, the directory 0700).
set -eu
umask 077

cd "$(dirname "$0")/.."
PY=.venv/bin/python
VAR=${KVMWEB_VAR_DIR:-var}
BIND=${KVMWEB_BIND:-127.0.0.1}
PORT=${KVMWEB_PORT:-8000}
LAB=${KVMWEB_LAB_NAME:-demo}
REDIS_PORT=${KVMWEB_REDIS_PORT:-6379}
mkdir -p "$VAR"
chmod 700 "$VAR"
VAR=$(cd "$VAR" && pwd)
export KVMWEB_VAR_DIR="$VAR"
CONF="$VAR/supervisord.conf"
OWN_REDIS=
if [ -z "${REDIS_URL:-}" ]; then
    OWN_REDIS=1
fi

# A process is alive if it exists and is not a zombie: on machines whose
# PID 1 does not reap, a stopped daemon lingers as one.
# supervisorctl status exits non-zero unless every program is RUNNING;
# a program that dies at once is FATAL within startsecs x startretries.
SETTLE_SECONDS=3

alive() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)
    [ "$state" != Z ]
}

pid_of() {
    [ -f "$VAR/$1.pid" ] && cat "$VAR/$1.pid" || true
}

# Before the supervisor, the demo kept web and worker in pid files: stop what
# an older version left running.
stop_legacy() {
    for name in web worker redis; do
        pid=$(pid_of "$name")
        if alive "$pid"; then
            echo "stopping $name left by an older demo (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            i=0
            while alive "$pid" && [ "$i" -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
            alive "$pid" && kill -KILL "$pid" 2>/dev/null
        fi
        rm -f "$VAR/$name.pid"
    done
}

ctl() {
    supervisorctl -c "$CONF" "$@"
}

supervisor_running() {
    [ -f "$CONF" ] && alive "$(pid_of supervisord)"
}

# The demo's own Redis: loopback only, a password generated once, kept with
# its URL in var/redis-url (kvmweb's settings read it when REDIS_URL is not
# set) and in var/redis.conf; never on a command line.
redis_setup() {
    REDIS_URL=$("$PY" -m kvmweb.supervisor redis "$VAR" --port "$REDIS_PORT")
    export REDIS_URL
}

redis_answers() {
    "$PY" - <<'EOF' 2>/dev/null
import os
import redis
redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=1).ping()
EOF
}

lab_possible() {
    [ "$(uname -s)" = Linux ] && [ "$(id -u)" -eq 0 ] || return 1
    for b in ip unshare tini libvirtd virtlogd qemu-system-x86_64 bindfs; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || return 1
    done
}

wait_http() {
    "$PY" - "http://127.0.0.1:$PORT/accounts/login/" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2).read()
        break
    except Exception as e:
        if time.monotonic() > deadline:
            sys.exit(f"the web server did not answer within 30 s ({e})")
        time.sleep(0.3)
EOF
}

start() {
    [ -n "$OWN_REDIS" ] && redis_setup
    if lab_possible; then
        echo "lab: $LAB (simulated hosts kvm01, kvm02 and kvm03)"
        # The lab's hosts are system daemons with files of their own (QEMU
        # reads its images as another user): not under kvmweb's private umask.
        (umask 022 && "$PY" -m tests.lab up --name "$LAB")
        mode="--lab $LAB"
    else
        echo "lab: cannot run here (needs root on Linux with libvirt, QEMU, tini and bindfs);"
        echo "     using libvirt's test driver instead: hosts test01 and test02, no real guests"
        mode="--test-driver"
        export KVMWEB_ALLOW_TEST_DRIVER=true  # refused unless asked for, also in web and worker
    fi
    "$PY" manage.py migrate --noinput -v 0
    # shellcheck disable=SC2086  # two words
    "$PY" scripts/demo_setup.py $mode

    "$PY" manage.py collectstatic --noinput -v 0

    stop_legacy
    if [ -n "$OWN_REDIS" ]; then
        "$PY" -m kvmweb.supervisor conf "$VAR" --bind "$BIND" --port "$PORT" --webs "${KVMWEB_WEBS:-1}" --with-redis >/dev/null
    else
        redis_answers || { echo "redis: nothing answers at REDIS_URL" >&2; exit 1; }
        "$PY" -m kvmweb.supervisor conf "$VAR" --bind "$BIND" --port "$PORT" --webs "${KVMWEB_WEBS:-1}" >/dev/null
    fi
    if supervisor_running; then
        # Run the code as it is now, and any program the Procfile gained.
        ctl update >/dev/null
        ctl restart all
    else
        supervisord -c "$CONF"
    fi
    wait_http
    sleep "$SETTLE_SECONDS"
    if ! ctl status >/dev/null; then
        ctl status >&2 || true
        echo "a process did not stay up: see the logs in $VAR" >&2
        exit 1
    fi

    shown=$BIND
    [ "$BIND" = 0.0.0.0 ] && shown=127.0.0.1
    cat <<EOF

kvmweb is running:  http://$shown:$PORT/
  log in as:   admin  (password: printed above when the user was created, or
               KVMWEB_ADMIN_PASSWORD; to set a new one: .venv/bin/python manage.py changepassword admin)
  processes:   make status        (supervisord restarts any that dies; logs in $VAR/*.log)
  stop:        make stop          (the lab stays up: make lab-down)
EOF
}

status() {
    if supervisor_running; then
        ctl status || true
    else
        echo "supervisord: stopped"
    fi
}

case "${1:-}" in
    start) start ;;
    stop)
        stop_legacy
        if supervisor_running; then
            ctl stop all >/dev/null || true
            ctl shutdown >/dev/null || true
            i=0
            while alive "$(pid_of supervisord)" && [ "$i" -lt 150 ]; do i=$((i + 1)); sleep 0.1; done
        fi
        status
        ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
