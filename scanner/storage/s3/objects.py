"""The botocore client used for whole objects (output uploads, state downloads), built one way.

Listing does not use it (``client.py`` sends its own GETs); objects are few and large, so
botocore's own retries and parsing are fine here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from scanner.config import ConnectionConfig


@dataclass
class _Shared:
    """One client and the calls using it: the last to leave closes it."""

    ready: asyncio.Event = field(default_factory=asyncio.Event)
    client: Any = None
    context: Any = None
    error: BaseException | None = None
    users: int = 0


# Per event loop and connection. Creating a client costs tens of milliseconds of CPU (botocore's
# models, endpoint rules, credentials), which a caller making many small calls (a shared scan's
# board: a LIST and a few GETs twice a second, a put for each claim) would pay every time.
_Key = tuple[asyncio.AbstractEventLoop, ConnectionConfig]
_clients: dict[_Key, _Shared] = {}


@contextlib.asynccontextmanager
async def object_client(connection: ConnectionConfig) -> AsyncIterator[Any]:
    """An aiobotocore S3 client for ``connection``: the one calls in flight on this loop are
    using already, or a new one. So a caller that keeps one open makes every object call
    inside it reuse one client, its connection pool and its credentials."""
    key = (asyncio.get_running_loop(), connection)
    shared = await _join(key, connection)
    try:
        yield shared.client
    finally:
        shared.users -= 1
        if shared.users == 0:
            del _clients[key]
            await shared.context.__aexit__(None, None, None)


async def _join(key: _Key, connection: ConnectionConfig) -> _Shared:
    """The shared client of ``key``, counted as used once more; made here when there is none."""
    while True:
        shared = _clients.get(key)
        if shared is None:
            shared = _clients[key] = _Shared()
            try:
                shared.context = _new_client(connection)
                shared.client = await shared.context.__aenter__()
            except BaseException as exc:
                shared.error = exc
                del _clients[key]
                raise
            finally:
                shared.ready.set()
        else:
            await shared.ready.wait()
            if shared.error is not None:
                continue  # its maker failed (or was cancelled): make one, and see for ourselves
        shared.users += 1
        return shared


def _new_client(connection: ConnectionConfig) -> Any:
    """An async context manager yielding a new aiobotocore S3 client for ``connection``."""
    # Imported on the first object call: a scan to a local file never needs boto3's stack.
    import aioboto3
    from botocore import UNSIGNED
    from botocore.config import Config

    session = aioboto3.Session(profile_name=connection.profile)
    return session.client(
        "s3",
        endpoint_url=connection.endpoint_url,
        region_name=connection.region,
        verify=connection.ca_bundle,
        config=Config(
            signature_version=UNSIGNED if connection.no_sign_request else "s3v4",
            s3={"addressing_style": connection.addressing_style},
            retries={"max_attempts": connection.max_attempts, "mode": "adaptive"},
        ),
    )
