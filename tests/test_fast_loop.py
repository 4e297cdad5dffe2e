"""make test-fast leaves out the tests marked `processes`: a test that starts a
server, a worker or another Python without that marker fails, saying so."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [[sys.executable, "-c", "pass"], ["daphne", "--version"], ["redis-server", "-v"]])
def test_an_unmarked_test_may_not_start_a_server_or_python(argv):
    with pytest.raises(RuntimeError, match="mark it @pytest.mark.processes"):
        subprocess.run(argv, capture_output=True)


@pytest.mark.processes
def test_a_marked_test_may():
    assert subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout == "42\n"
