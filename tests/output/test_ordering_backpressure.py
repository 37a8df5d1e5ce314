"""``OrderedOutput(spill=False)``: past the budget, producers behind the head wait (no spill file)."""

from __future__ import annotations

import anyio
from anyio import wait_all_tasks_blocked

from scanner.output.ordering import OrderedOutput


def test_a_producer_behind_the_head_waits_instead_of_spilling() -> None:
    async def main() -> None:
        output = OrderedOutput(memory_budget=100, spill=False)
        head = output.first
        [behind] = output.insert_after(head, [("m", None)])
        written: list[bytes] = []
        resumed = anyio.Event()

        async def producer_behind() -> None:
            output.add(behind, b"b" * 150, "n")
            await output.wait_for_room(behind)
            resumed.set()

        async def write(chunk: bytes) -> None:
            written.append(chunk)

        async with anyio.create_task_group() as group:
            group.start_soon(producer_behind)
            await wait_all_tasks_blocked()
            assert not resumed.is_set()  # over the budget, behind the head: it waits
            assert output.spilled_bytes == 0
            group.start_soon(output.drain, write)
            output.add(head, b"a" * 10, "a")
            output.finish(head)
            await resumed.wait()  # its segment reached the head: room again
            output.finish(behind)
        assert written == [b"a" * 10, b"b" * 150]
        assert output.spilled_bytes == 0

    anyio.run(main)


def test_with_spill_it_goes_on_at_once() -> None:
    async def main() -> None:
        output = OrderedOutput(memory_budget=100)
        [behind] = output.insert_after(output.first, [("m", None)])
        output.add(behind, b"b" * 150, "n")
        await output.wait_for_room(behind)
        assert output.spilled_bytes == 150
        output.close()

    anyio.run(main)
