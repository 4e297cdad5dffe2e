"""A row's link, reversed once per process.

A list page links every row (a VM and its host, a migration and its hosts):
up to 300 calls to ``reverse()`` for one page, about a quarter of the time it
took to render ``/domains/``. The names and values of those links repeat from
one request to the next, so each is reversed once and kept, per script prefix
(the one thing besides the URLconf a reversed URL depends on).
"""

from functools import lru_cache

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.urls import get_script_prefix, reverse


@lru_cache(maxsize=8192)
def _reversed(name: str, value: object, prefix: str) -> str:
    return reverse(name, args=[value])


def row_url(name: str, value: object) -> str:
    """``reverse(name, args=[value])``, kept."""
    return _reversed(name, value, get_script_prefix())


@receiver(setting_changed)
def _forget(setting: str, **kwargs: object) -> None:
    if setting == "ROOT_URLCONF":
        _reversed.cache_clear()
