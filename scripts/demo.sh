#!/bin/sh
# Start or stop the kvmweb demo on this machine.
#
#   scripts/demo.sh start    # lab (or test driver), database, admin, hosts, guests, Redis, web, worker
#   scripts/demo.sh stop     # web, worker, and Redis if this script started it
#   scripts/demo.sh status
#
# Called by `make demo` / `make stop` after the system packages and the
# virtualenv are in place. Settings come from the environment as in
# kvmweb/settings.py; besides those:
#   KVMWEB_BIND (127.0.0.1), KVMWEB_PORT (8000), KVMWEB_LAB_NAME (demo),
#   KVMWEB_ADMIN_PASSWORD (default: a random one, printed once).
# Logs and pid files go to $KVMWEB_VAR_DIR (default var/).
set -eu

cd "$(dirname "$0")/.."
PY=.venv/bin/python
VAR=${KVMWEB_VAR_DIR:-var}
BIND=${KVMWEB_BIND:-127.0.0.1}
PORT=${KVMWEB_PORT:-8000}
LAB=${KVMWEB_LAB_NAME:-demo}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export REDIS_URL
mkdir -p "$VAR"

# A process is alive if it exists and is not a zombie: on machines whose
# PID 1 does not reap, a stopped daemon lingers as one.
alive() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)
    [ "$state" != Z ]
}

pid_of() {
    [ -f "$VAR/$1.pid" ] && cat "$VAR/$1.pid" || true
}

stop_one() {
    name=$1
    pid=$(pid_of "$name")
    if ! alive "$pid"; then
        rm -f "$VAR/$name.pid"
        return 0
    fi
    printf '%s' "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while alive "$pid"; do
        i=$((i + 1))
        # The RQ worker finishes its job on the first TERM and stops at once
        # on the second; a migration it leaves is peer-to-peer and carries on
        # in libvirt, and `manage.py reconcile` (or the next worker) settles it.
        [ "$i" -eq 50 ] && kill -TERM "$pid" 2>/dev/null
        [ "$i" -eq 100 ] && kill -KILL "$pid" 2>/dev/null
        [ "$i" -gt 120 ] && break
        sleep 0.1
    done
    echo
    rm -f "$VAR/$name.pid"
}

start_bg() {
    name=$1
    shift
    setsid nohup "$@" >>"$VAR/$name.log" 2>&1 </dev/null &
    echo $! >"$VAR/$name.pid"
}

redis_answers() {
    "$PY" - "$REDIS_URL" <<'EOF' 2>/dev/null
import sys
import redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
EOF
}

start_redis() {
    if redis_answers; then
        echo "redis: answers at $REDIS_URL"
        return 0
    fi
    hostport=$(echo "$REDIS_URL" | sed -n 's|^redis://\([^/@]*@\)\{0,1\}\([^/]*\).*$|\2|p')
    host=${hostport%:*}
    port=${hostport##*:}
    [ "$port" = "$hostport" ] && port=6379
    case "$host" in
        127.0.0.1 | localhost) ;;
        *)
            echo "redis: nothing answers at $REDIS_URL, and it is not on this machine: start it there" >&2
            exit 1
            ;;
    esac
    echo "redis: starting on 127.0.0.1:$port"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
        --pidfile "$PWD/$VAR/redis.pid" --logfile "$PWD/$VAR/redis.log" --dir "$PWD/$VAR" \
        --save 60 1 --dbfilename redis.rdb
    i=0
    until redis_answers; do
        i=$((i + 1))
        [ "$i" -gt 50 ] && { echo "redis did not start: see $VAR/redis.log" >&2; exit 1; }
        sleep 0.1
    done
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
    if lab_possible; then
        echo "lab: $LAB (simulated hosts kvm01, kvm02 and kvm03)"
        "$PY" -m tests.lab up --name "$LAB"
        mode="--lab $LAB"
    else
        echo "lab: cannot run here (needs root on Linux with libvirt, QEMU, tini and bindfs);"
        echo "     using libvirt's test driver instead: hosts test01 and test02, no real guests"
        mode="--test-driver"
    fi
    "$PY" manage.py migrate --noinput -v 0
    # shellcheck disable=SC2086  # two words
    "$PY" scripts/demo_setup.py $mode

    start_redis
    # Restart web and worker so that they run the code as it is now.
    stop_one web
    stop_one worker
    start_bg web .venv/bin/daphne -b "$BIND" -p "$PORT" kvmweb.asgi:application
    start_bg worker "$PY" manage.py rqworker --with-scheduler migrations default
    wait_http
    sleep 1
    alive "$(pid_of worker)" || { echo "the worker stopped at once: see $VAR/worker.log" >&2; exit 1; }

    shown=$BIND
    [ "$BIND" = 0.0.0.0 ] && shown=127.0.0.1
    cat <<EOF

kvmweb is running:  http://$shown:$PORT/
  log in as:   admin  (password: printed above when the user was created, or
               KVMWEB_ADMIN_PASSWORD; to set a new one: .venv/bin/python manage.py changepassword admin)
  web log:     $VAR/web.log     (pid $(pid_of web))
  worker log:  $VAR/worker.log  (pid $(pid_of worker))
  stop:        make stop          (the lab stays up: make lab-down)
EOF
}

status() {
    for name in web worker redis; do
        pid=$(pid_of "$name")
        if alive "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
    done
}

case "${1:-}" in
    start) start ;;
    stop)
        stop_one web
        stop_one worker
        stop_one redis
        status
        ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
