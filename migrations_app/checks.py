"""Pre-flight checks: everything the article's considerations and common errors
warn about, asked of the real hosts before anything moves."""

from dataclasses import asdict, dataclass


@dataclass
class CheckResult:
    name: str
    result: str  # pass, warn, fail
    message: str
    detail: str = ""

    def as_dict(self):
        return asdict(self)


def run_checks(req):
    raise NotImplementedError  # being written
