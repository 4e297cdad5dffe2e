"""WhiteNoise for the test suite: the static files read once per session.

Every test's client builds the middleware anew, and WhiteNoise with finders
reads the headers of every static file (Django admin's and DRF's included)
each time: 300 times a run, a tenth of the fast suite's time. The files do
not change during a run, so the table read the first time serves them all.
"""

from typing import Any, ClassVar

from whitenoise.middleware import WhiteNoiseMiddleware


class WhiteNoiseReadOnce(WhiteNoiseMiddleware):
    _files: ClassVar[dict[str, Any] | None] = None

    def add_files_from_finders(self) -> None:
        if WhiteNoiseReadOnce._files is None:
            super().add_files_from_finders()
            WhiteNoiseReadOnce._files = dict(self.files)
        else:
            self.files.update(WhiteNoiseReadOnce._files)
