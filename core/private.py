"""Files kvmweb writes are private to the account it runs as.

The database, the secret key, Redis's dump and the logs live under var/;
every process that writes there (manage.py and so the worker, the ASGI
server, scripts/demo.sh) starts with a umask that keeps new files 0600 and
new directories 0700, and makes var/ itself 0700 even if an older version
left it open.
"""

import os

PRIVATE_UMASK = 0o077


def make_private(var_dir: str | os.PathLike[str]) -> None:
    os.umask(PRIVATE_UMASK)
    os.makedirs(var_dir, mode=0o700, exist_ok=True)
    if os.stat(var_dir).st_mode & 0o077:
        os.chmod(var_dir, 0o700)
