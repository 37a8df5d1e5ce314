"""The object client is shared by the calls in flight on one loop for one connection, and made
anew once none is: a caller that keeps one open makes its many small calls reuse it."""

from __future__ import annotations

import anyio

from scanner.config import ConnectionConfig
from scanner.storage.s3.objects import object_client

CONNECTION = ConnectionConfig(endpoint_url="http://127.0.0.1:9", region="us-east-1")


def test_calls_in_flight_share_one_client_and_the_last_closes_it() -> None:
    async def main() -> None:
        async with object_client(CONNECTION) as kept:
            seen = []

            async def call() -> None:
                async with object_client(CONNECTION) as client:
                    seen.append(client)
                    await anyio.sleep(0)

            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(call)
            assert all(client is kept for client in seen)
            other = ConnectionConfig(endpoint_url="http://127.0.0.1:10", region="us-east-1")
            async with object_client(other) as elsewhere:
                assert elsewhere is not kept
        async with object_client(CONNECTION) as later:
            assert later is not kept

    anyio.run(main)


def test_clients_that_start_together_are_one() -> None:
    async def main() -> None:
        seen = []

        async def call() -> None:
            async with object_client(CONNECTION) as client:
                seen.append(client)
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(call)
        assert len({id(client) for client in seen}) == 1

    anyio.run(main)
