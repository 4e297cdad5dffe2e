"""kvmweb settings: one module, configured from the environment.

Every value has a default that works on a single machine; a value that is
present but malformed raises ImproperlyConfigured instead of being guessed at.
"""

import ipaddress
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any, overload

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("KVMWEB_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}.")


@overload
def env_number(name: str, default: int, minimum: float = 0, kind: type[int] = int) -> int: ...


@overload
def env_number(name: str, default: float, minimum: float, kind: type[float]) -> float: ...


def env_number(name: str, default: float, minimum: float = 0, kind: type[int] | type[float] = int) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ImproperlyConfigured(f"{name} must be {what}, not {value!r}.") from None
    if not number >= minimum:  # also refuses nan
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return number


def env_int(name: str, default: int, minimum: int = 0) -> int:
    return env_number(name, default, minimum)


def env_rate(name: str, default: str) -> str:
    """A request rate as DRF's throttles take it: ``100/minute`` (second, minute, hour, day)."""
    value = os.environ.get(name) or default
    if not re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name} must be a rate such as 100/minute, not {value!r}.")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    # A single machine gets a random key kept beside the database, so
    # sessions survive restarts without anyone having to invent a secret.
    path = VAR_DIR / "secret-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "csp",
    "django_rq",
    "channels",
    "core",
    "hosts",
    "migrations_app",
    "maintenance",
    "dashboard",
    # The project itself, for its management command runworkers (the worker pool).
    "kvmweb",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Static files straight from the ASGI application, compressed and with
    # cache headers, without a separate web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Dates in the browser's zone, as it names it in a cookie.
    "core.timezones.UserTimeZoneMiddleware",
    # Every page needs login unless a view is explicitly marked otherwise.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "hosts.middleware.RoleRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A login refused by core.logins' limits gets 429, saying when to try again.
    "core.logins.LoginLimitMiddleware",
]
AUTHENTICATION_BACKENDS = [
    # Django's password check, limited per user name, per address and in how
    # many run at once (core/logins.py says how).
    "core.logins.LimitedModelBackend",
]

ROOT_URLCONF = "kvmweb.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "hosts.context_processors.roles",
            ],
            # kvmweb's formatting filters (size, rate, duration...) in every template.
            "builtins": ["core.formatting"],
        },
    },
]
ASGI_APPLICATION = "kvmweb.asgi.application"

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        # The web process serves HTTP from a fixed pool of threads (kvmweb.asgi),
        # so each thread keeps its connection, checked before each request's
        # first query (a database restarted meanwhile costs no failed request).
        conn_max_age=env_int("KVMWEB_DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the workers write concurrently: wait for the lock
    # instead of failing, and take it at the start of a transaction so two
    # writers never deadlock upgrading a read lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file, not memory, for the test database: tests that run a real RQ
    # worker or daphne in another process must see the same data.
    # Named per process so that two test runs on one machine do not collide.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # `manage.py collectstatic` (make demo, deploy/) writes gzip and brotli
    # copies that WhiteNoise serves to clients that accept them.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (tests, development) WhiteNoise serves the files where
# they are in the source tree, so what is served is never an old copy.
WHITENOISE_USE_FINDERS = env_bool("KVMWEB_STATIC_FROM_SOURCE", DEBUG)
WHITENOISE_MAX_AGE = 3600

# No request kvmweb takes comes near this (JSON bodies, small forms, no
# uploads); core.bodylimit refuses a larger body before it is read.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the page's script reads it for fetch()
X_FRAME_OPTIONS = "DENY"

# Behind a TLS proxy (docs/OPERATIONS.md, "Security"): cookies only over
# HTTPS, HSTS, and the proxy's word for the scheme. `manage.py check --deploy`
# is clean with it.
SECURE = env_bool("DJANGO_SECURE", False)
if SECURE:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Content-Security-Policy: scripts, styles, images and sockets from this site
# only; no inline script or style (the pages have none), no plugins, no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Login limits (core/logins.py): past this many wrong passwords for a user
# name, each further try for it waits a delay (1 s doubling, at most 60 s);
# past four times as many from one address, that address waits (at most the
# cool-off). Failures are forgotten this many minutes after the last.
KVMWEB_LOGIN_FAILURE_LIMIT = env_int("KVMWEB_LOGIN_FAILURE_LIMIT", 5, minimum=1)
KVMWEB_LOGIN_COOLOFF_MINUTES = env_int("KVMWEB_LOGIN_COOLOFF_MINUTES", 15, minimum=1)


def _redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    # The demo's own Redis requires a password: scripts/demo.sh keeps its URL
    # (with the password) beside the secret key, private like it.
    try:
        return (VAR_DIR / "redis-url").read_text().strip()
    except FileNotFoundError:
        return "redis://127.0.0.1:6379/0"


REDIS_URL = _redis_url()
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    # Not the URL itself: it may carry a password.
    raise ImproperlyConfigured(f"REDIS_URL must be a redis://, rediss:// or unix:// URL, not {REDIS_URL[:8]!r}….")

# Jobs are JSON, never pickles: whoever can write to Redis can then at most
# queue a call to a function RQ can import, with plain data, not run code of
# their own choosing in the worker. The worker and its scheduler use the same
# serializer (kvmweb.worker.Worker insists on it).
RQ_SERIALIZER = "rq.serializers.JSONSerializer"
# The cache holds the API's throttle counts; in Redis they hold across every
# web process. JSON, not Django's pickles (core.cache): a value someone wrote
# into Redis is read as data or not at all.
CACHES = {"default": {"BACKEND": "core.cache.RedisCache", "LOCATION": REDIS_URL}}

RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600, "SERIALIZER": RQ_SERIALIZER},
    # Migrations can run for a long time; the job itself enforces the
    # migration's deadline, RQ's timeout is only a last resort.
    "migrations": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 6 * 3600, "SERIALIZER": RQ_SERIALIZER},
}
# The worker runs only kvmweb's own job functions (kvmweb.jobs.ALLOWED_JOBS).
RQ = {"WORKER_CLASS": "kvmweb.worker.Worker", "JOB_CLASS": "kvmweb.jobs.KvmwebJob"}


def channel_layers(redis_url: str) -> dict[str, dict[str, Any]]:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # channels-redis waits on Redis in 5 s blocking reads; redis-py 8
            # gives up on any read after 5 s by default, which killed every
            # WebSocket that had been quiet that long. Reads may take longer.
            "CONFIG": {"hosts": [{"address": redis_url, "socket_timeout": 30}]},
        }
    }


CHANNEL_LAYERS = channel_layers(REDIS_URL)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an unauthenticated API call gets 401 with a
        # WWW-Authenticate header rather than a bare 403.
        # API tokens are kept only as digests (django-rest-knox); the header
        # is still "Authorization: Token <token>".
        "core.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["hosts.permissions.IsOperatorOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # JSON in, as the API is documented; anything else is 415. (Form bodies
    # also meet daphne's own multipart parser, which answers a malformed one
    # with a bare 400 before kvmweb sees it.)
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_CLASSES": [
        "core.throttling.AnonRateThrottle",
        "core.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_rate("KVMWEB_API_ANON_RATE", "60/minute"),
        "user": env_rate("KVMWEB_API_USER_RATE", "1200/minute"),
    },
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "kvmweb API",
    "DESCRIPTION": "Inventory of KVM hosts and migration of virtual machines between them.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["hosts.permissions.HasRole"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "HostStatusEnum": "hosts.models.HostStatus",
        "MigrationStatusEnum": "migrations_app.models.Status",
        "EvacuationStatusEnum": "maintenance.models.Status",
    },
}
# API tokens (create_api_token) expire this many days after they are made;
# their owner lists and revokes them (/account/tokens/, /api/tokens/), and a
# new password revokes them all (core/tokens.py). Only digests are stored.
KVMWEB_TOKEN_TTL_DAYS = env_int("KVMWEB_TOKEN_TTL_DAYS", 90, minimum=1)
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=KVMWEB_TOKEN_TTL_DAYS),
    "AUTH_HEADER_PREFIX": "Token",
}

# How long a web request waits for a libvirt host before calling it unreachable.
KVMWEB_CONNECT_TIMEOUT = env_int("KVMWEB_CONNECT_TIMEOUT", 5, minimum=1)
# Connections to hypervisors (docs/OPERATIONS.md, "Adding real hosts"). kvmweb's SSH key:
# generated under VAR_DIR/ssh on first use unless this names one.
KVMWEB_SSH_KEY = os.environ.get("KVMWEB_SSH_KEY", "")
# Client certificate directory for qemu+tls (cacert.pem, clientcert.pem,
# clientkey.pem); empty: libvirt's defaults (/etc/pki for root).
KVMWEB_TLS_DIR = os.environ.get("KVMWEB_TLS_DIR", "")
# Plain qemu+tcp has no encryption: only for libvirtds that demand SASL, and labs.
KVMWEB_ALLOW_TCP = env_bool("KVMWEB_ALLOW_TCP", False)
# libvirt's test driver (test:///default): the test suite and the demo's fallback.
KVMWEB_ALLOW_TEST_DRIVER = env_bool("KVMWEB_ALLOW_TEST_DRIVER", False)
# Test-driver files kvmweb itself writes (tests, demo) may be used only below this directory.
KVMWEB_TEST_DRIVER_DIR = os.environ.get("KVMWEB_TEST_DRIVER_DIR", str(VAR_DIR / "test-hosts"))
# The worker line of the Procfile (manage.py runworkers, kvmweb/workerpool.py):
# how many migrations may run at once (each in a process of its own; the
# hosts' own limits apply on top), and how many processes take short jobs
# (syncs, reconcile, evacuation steps), which never wait behind a migration.
KVMWEB_WORKERS = env_int("KVMWEB_WORKERS", 4, minimum=1)
KVMWEB_SHORT_WORKERS = env_int("KVMWEB_SHORT_WORKERS", 2, minimum=1)
# How often the worker refreshes every host's inventory, in seconds (0: never).
KVMWEB_SYNC_INTERVAL = env_int("KVMWEB_SYNC_INTERVAL", 60)
# How often an open WebSocket checks that its login session is still good
# (not expired or removed, the user active, the password unchanged), in
# seconds. A password change or a deactivation closes sockets at once.
# Threads per web process that run HTTP requests (Django's handler, middleware
# and view); more requests wait their turn on the event loop. Few: they share
# one GIL with the event loop that carries the WebSockets, and under 200
# simulated users each thread more made pages and the dashboard slower
# (bench.load: 1 thread p95 0.60 s, 3: 0.71 s, 6: 0.77 s, 12: 1.1 s; dashboard
# lag 0.14, 0.28, 0.71, 3.1 s). More than one, so that an operator's slow
# action (a dry run against hosts over SSH) does not hold up every page.
KVMWEB_HTTP_THREADS = env_int("KVMWEB_HTTP_THREADS", 3, minimum=1)
KVMWEB_SOCKET_RECHECK_SECONDS = env_number("KVMWEB_SOCKET_RECHECK_SECONDS", 60.0, 0.1, float)

# Capacity (hosts/capacity.py), for hosts that do not set their own in the admin
# or the API: memory kept for the host itself, and how far memory and vCPUs may
# be promised beyond what the host has.
KVMWEB_RESERVED_MEMORY_MIB = env_int("KVMWEB_RESERVED_MEMORY_MIB", 1024)
KVMWEB_MEMORY_ALLOCATION_RATIO = env_number("KVMWEB_MEMORY_ALLOCATION_RATIO", 1.0, 0.1, float)
KVMWEB_CPU_ALLOCATION_RATIO = env_number("KVMWEB_CPU_ALLOCATION_RATIO", 4.0, 0.1, float)

# Parallel connections (multifd) for live migrations: the guest memory, in
# MiB, from which they pay off (bench/bench_multifd.py measures the break-even
# on a pair of hosts); the Automatic policy asks for them from this size on.
# On the lab (software-emulated guests on 2 shared cores, one bridge) they
# never paid off reliably for guests of 256 MiB to 2 GiB: each extra
# connection is one more thread on the same two cores. 4 GiB is a cautious
# default for real hosts, where one connection is bound by one core's copying
# on fast links; measure yours and set it.
KVMWEB_MULTIFD_MIN_MIB = env_int("KVMWEB_MULTIFD_MIN_MIB", 4096)
# How long a post-copy migration that lost its link waits for the target to
# answer again before the worker gives up resuming it (engine.postcopy): the
# VM is paused meanwhile, and is left paused on both sides, untouched, after.
KVMWEB_POSTCOPY_RECOVERY_SECONDS = env_int("KVMWEB_POSTCOPY_RECOVERY_SECONDS", 600, minimum=1)

# Balancing (maintenance.planner.balance): how many percentage points of
# committed memory (and vCPUs) a host may be off the cluster's mean, and how
# long a VM balancing moved is left where it went.
KVMWEB_BALANCE_THRESHOLD = env_number("KVMWEB_BALANCE_THRESHOLD", 10.0, 1.0, float)
KVMWEB_BALANCE_COOLDOWN_SECONDS = env_int("KVMWEB_BALANCE_COOLDOWN_SECONDS", 3600)


def _listen_address() -> str:
    value = os.environ.get("KVMWEB_LISTEN_ADDRESS", "").strip()
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ImproperlyConfigured(f"KVMWEB_LISTEN_ADDRESS must be an IP address, not {value!r}.") from None
    return value


# What a VM's VNC/SPICE console or TCP serial port listens on after a migration
# when it was bound to an address of the source that is not the one kvmweb
# reaches the source at (so there is no matching address on the target).
# Empty: such a VM is refused by the pre-flight checks.
KVMWEB_LISTEN_ADDRESS = _listen_address()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("KVMWEB_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated addresses or CIDRs, e.g. ``127.0.0.1,10.0.0.0/24``."""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for item in os.environ.get(name, "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ImproperlyConfigured(f"{name} must list addresses or CIDRs, not {item.strip()!r}.") from None
    return networks


# Reverse proxies whose X-Forwarded-For is believed (addresses or CIDRs; none
# by default): every limit per client address (API throttles, logins) reads the
# address through core.clientaddr.
KVMWEB_TRUSTED_PROXIES = env_networks("KVMWEB_TRUSTED_PROXIES")

# /metrics (Prometheus) answers a scrape carrying this bearer token, or one
# from these addresses; with neither set, nobody. Behind a reverse proxy every
# request comes from the proxy's address: use the token there.
KVMWEB_METRICS_TOKEN = os.environ.get("KVMWEB_METRICS_TOKEN", "")
KVMWEB_METRICS_ALLOW = env_networks("KVMWEB_METRICS_ALLOW")
# Optional: the networks hypervisors may be in (addresses or CIDRs). A host
# whose name resolves outside them is refused at registration and before
# every connection, so kvmweb cannot be pointed at the rest of the network.
KVMWEB_HYPERVISOR_NETWORKS = env_networks("KVMWEB_HYPERVISOR_NETWORKS")
