"""CPU per key of each stage of a scan, on real page bodies: ``python -m benchmarks.stages``.

The pages are what ``synthetic_s3.py`` serves for a layout (``dicom`` by default), fetched the way
the scanner asks for them (``EncodingType=url``, 1000 keys, ``StartAfter``). Each stage runs the
scanner's own code over every page, several rounds, and reports the median CPU time
(``time.process_time``) per key:

- ``sign``: one request's URL and SigV4 headers from the request template (``signing.sign``)
- ``http``: the GET over the scanner's own keep-alive client (``storage/s3/http.py``; 8 concurrent,
  as ``--concurrency`` does), the body read and decoded; the endpoint runs in its own process, so
  this is the client's share only. ``http (aiohttp)``: the same over aiohttp, for comparison
- ``parse``: ``parse_list_page`` of the decoded body
- ``count``: what ``PageHandler.select`` does with no filter (count, total size)
- ``filter``: ``RecordFilter.select`` with an ``--include`` glob every key passes
- ``encode``: ``encode_jsonl`` of the parsed page (and ``encode_csv``; ``pack``, what a page of records
  costs when it is spilled or crosses to a worker's file)
- ``order``: ``OrderedOutput.add`` of each chunk and ``drain`` to a writer that drops it
- ``write``: ``AtomicFileSink.write`` of each chunk to a file

    python -m benchmarks.stages [--layout dicom] [--keys 300000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from benchmarks.layouts import LAYOUTS
from benchmarks.synthetic_s3 import Bucket
from scanner.filters import FilterSpec, RecordFilter
from scanner.output.chunks import RecordChunk, pack
from scanner.output.ordering import OrderedOutput
from scanner.output.sinks import AtomicFileSink
from scanner.records import ObjectRecord, encode_csv, encode_jsonl, total_size
from scanner.storage.s3.parse import parse_list_page
from scanner.storage.s3.signing import RequestTemplate, sign

PAGE = 1000


def _page_queries(bucket: Bucket) -> list[dict[str, str]]:
    queries = [{"encoding-type": "url", "max-keys": str(PAGE)}]
    for index in range(PAGE - 1, len(bucket.keys) - 1, PAGE):
        queries.append({"encoding-type": "url", "max-keys": str(PAGE), "start-after": bucket.keys[index]})
    return queries


def _median_us_per_key(run: Callable[[], object], keys: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return statistics.median(times) / keys * 1e6


async def _fetch_all(endpoint: str, bucket: str, queries: Sequence[dict[str, str]], client: str) -> float:
    urls = [f"{endpoint}/{bucket}?list-type=2&" + "&".join(f"{k}={v}" for k, v in q.items()) for q in queries]
    get, close = await _client(client)
    await get(urls[0])  # connect outside the timing
    started = time.process_time()
    work = iter(urls)

    async def worker() -> None:
        for url in work:
            (await get(url)).decode("utf-8")

    await asyncio.gather(*(worker() for _ in range(8)))
    elapsed = time.process_time() - started
    await close()
    return elapsed


async def _client(
    name: str,
) -> tuple[Callable[[str], Awaitable[bytes]], Callable[[], Awaitable[None]]]:
    if name == "aiohttp":
        import aiohttp
        from yarl import URL

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=12))

        async def get_aiohttp(url: str) -> bytes:
            async with session.get(URL(url, encoded=False)) as response:
                return await response.read()

        return get_aiohttp, session.close
    from scanner.storage.s3.http import ConnectionPool

    pool = ConnectionPool(tls=None, connect_timeout=10, read_timeout=60, keep=12, user_agent="stages")

    async def get_pool(url: str) -> bytes:
        return (await pool.get(url, {})).body

    return get_pool, pool.close


def _http(layout: str, keys: int, queries: Sequence[dict[str, str]], rounds: int, client: str) -> float:
    bucket = f"bench-{layout}-{keys}"
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.synthetic_s3", "--buckets", bucket],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().split()[-1]
        times = [asyncio.run(_fetch_all(endpoint, bucket, queries, client)) for _ in range(rounds)]
    finally:
        server.terminate()
        server.wait()
    return statistics.median(times) / keys * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", default="dicom")
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-http", action="store_true", help="skip the stage that needs an endpoint")
    args = parser.parse_args(argv)

    bucket = Bucket(f"bench-{args.layout}-{args.keys}", LAYOUTS[args.layout](args.keys))
    queries = _page_queries(bucket)
    bodies = [bucket.list(q).encode("utf-8") for q in queries]
    keys = len(bucket.keys)
    texts = [body.decode("utf-8") for body in bodies]
    pages = [parse_list_page(text, delimited=False).records for text in texts]
    chunks = [encode_jsonl(page) for page in pages]
    rounds = args.rounds
    results: dict[str, float] = {}

    from botocore.credentials import Credentials

    template = RequestTemplate(f"http://127.0.0.1:9000/{bucket.name}", "us-east-1", ())
    credentials = Credentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    ).get_frozen_credentials()
    params = [
        {
            "Bucket": bucket.name,
            "Prefix": "",
            "EncodingType": "url",
            "MaxKeys": PAGE,
            **({"StartAfter": q["start-after"]} if "start-after" in q else {}),
        }
        for q in queries
    ]
    results["sign"] = _median_us_per_key(
        lambda: [sign(template, p, credentials) for p in params], keys, rounds
    )
    if not args.no_http:
        results["http"] = _http(args.layout, args.keys, queries, rounds, "scanner")
        results["http (aiohttp)"] = _http(args.layout, args.keys, queries, rounds, "aiohttp")
    results["decode"] = _median_us_per_key(lambda: [b.decode("utf-8") for b in bodies], keys, rounds)
    results["parse"] = _median_us_per_key(
        lambda: [parse_list_page(t, delimited=False) for t in texts], keys, rounds
    )

    def count() -> None:
        objects = size = 0
        for page in pages:
            objects += len(page)
            size += total_size(page)

    results["count"] = _median_us_per_key(count, keys, rounds)
    record_filter = RecordFilter(FilterSpec(include=("*.dcm",)))
    fresh = [lambda t=t: parse_list_page(t, delimited=False).records for t in texts]
    # A filter needs records: time it on pages fresh from the parser (records made on demand).
    results["filter (records made + glob)"] = (
        _median_us_per_key(lambda: [record_filter.select(make()) for make in fresh], keys, rounds)
        - results["parse"]
    )
    results["encode jsonl"] = _median_us_per_key(lambda: [encode_jsonl(p) for p in pages], keys, rounds)
    as_records: list[list[ObjectRecord]] = [list(p) for p in pages]
    results["encode jsonl (records, orjson)"] = _median_us_per_key(
        lambda: [encode_jsonl(p) for p in as_records], keys, rounds
    )
    results["encode csv"] = _median_us_per_key(lambda: [encode_csv(p) for p in pages], keys, rounds)
    results["pack records (spill)"] = _median_us_per_key(
        lambda: [pack(RecordChunk(p)) for p in pages], keys, rounds
    )

    async def order() -> None:
        output = OrderedOutput(256 << 20)
        segment = output.first

        async def drop(_: bytes) -> None:
            return None

        for chunk in chunks:
            output.add(segment, chunk)
        output.finish(segment)
        await output.drain(drop)

    results["order"] = _median_us_per_key(lambda: asyncio.run(order()), keys, rounds)

    with tempfile.TemporaryDirectory() as directory:

        async def write() -> None:
            sink = AtomicFileSink(os.path.join(directory, "out.jsonl"))
            await sink.open()
            for chunk in chunks:
                await sink.write(chunk)
            await sink.abort()

        results["write"] = _median_us_per_key(lambda: asyncio.run(write()), keys, rounds)

    print(f"{keys:,} keys, {len(bodies)} pages of the {args.layout} layout; median of {rounds} rounds")
    print("| stage | µs CPU per key |")
    print("|---|--:|")
    for name, value in results.items():
        print(f"| {name} | {value:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
