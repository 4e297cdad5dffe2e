"""Files kvmweb writes under var/ are the account's own (finding 2).

The SQLite file, the secret key and whatever else lands in var/ were
world-readable: a local user read an operator's API token from the database.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.processes
def test_var_and_everything_kvmweb_writes_there_is_private(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    os.chmod(var, 0o755)  # as an older kvmweb, or a careless umask, left it
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SECRET_KEY")}
    env["KVMWEB_VAR_DIR"] = str(var)
    for args in (["migrate", "--noinput", "-v", "0"], ["create_api_token", "nobody-yet"]):
        # The second fails (no such user) after opening the database: that is enough.
        subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True
        )
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    files = [p for p in var.rglob("*")]
    assert any(p.name == "db.sqlite3" for p in files) and any(p.name == "secret-key" for p in files)
    for p in files:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p.name} is {oct(mode)}"
