"""Django's Redis cache, with JSON in place of pickle.

Django's RedisCache pickles every value it stores and unpickles every value it
reads: a pickle someone wrote into kvmweb's Redis (under a throttle's key, say)
ran its code in the web process on the next request that read the key. kvmweb
caches only plain data (throttle histories, the time a peer login was proved),
so JSON carries all of it; a value that is not JSON is treated as absent.
"""

import json
import logging
from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

log = logging.getLogger(__name__)


class JSONSerializer:
    def dumps(self, obj: Any) -> bytes | int:
        # Integers stay integers, as Django's serializer keeps them, so incr() works in Redis.
        if type(obj) is int:
            return obj
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        try:
            return int(data)
        except ValueError:
            return json.loads(data)


class JSONCacheClient(RedisCacheClient):
    def __init__(self, servers: Any, **options: Any) -> None:
        options["serializer"] = JSONSerializer
        super().__init__(servers, **options)

    def get(self, key: Any, default: Any) -> Any:
        try:
            return super().get(key, default)
        except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("ignored a cache value kvmweb did not write (not JSON) under %r", key)
            return default

    def get_many(self, keys: Any) -> dict[Any, Any]:
        found = {}
        for key in keys:
            value = self.get(key, None)
            if value is not None:
                found[key] = value
        return found


class RedisCache(DjangoRedisCache):
    def __init__(self, server: Any, params: Any) -> None:
        super().__init__(server, params)
        self._class = JSONCacheClient
