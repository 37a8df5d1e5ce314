"""The ceiling lister: what the server itself can give on this machine.

It is handed the ideal request pattern (the key at every 1000th position of the sorted key list,
known beforehand from the layout), so it needs no discovery at all: it fetches exactly those
1000-key pages (``StartAfter`` = each of those keys) with raw SigV4 GETs from 8 threads over
keep-alive connections, and counts ``<Key>`` occurrences without parsing anything. No real lister
can do less work per key, so the gap between a tool and this one is the tool's own cost.

    python -m benchmarks.ceiling --endpoint-url URL --bucket B --plan PLAN.json [--threads 8]
                                 [--records OUT.jsonl]

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Prints ``N keys, M requests``.
Only the standard library is imported so that start-up costs next to nothing.

``--records`` adds the per-record work of a real lister and nothing else: every page is asked
for URL-encoded, as the scanner asks, read by the scanner's own parser and written to the file
as its JSON Lines (in arrival order). Same ideal pages, same threads: the difference from the
plain run is what reading and writing the records costs on this machine, and the difference
between it and the scanner is what the scanner spends finding its pages (discovery, partial
pages where ranges meet) and running its async pipeline. The line ``N keys, M requests`` then
goes to standard error.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE = 1000
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def ideal_start_afters(sorted_keys: Sequence[str], page: int = PAGE) -> list[str | None]:
    """``StartAfter`` of every page a perfect lister would request: none, then every page-th key.

    The last key is left out: a page that starts after it would be empty.
    """
    return [None, *sorted_keys[page - 1 : len(sorted_keys) - 1 : page]]


def write_plan(path: Path, sorted_keys: Sequence[str]) -> None:
    # JSON, not lines: the unicode layout has keys with vertical tabs, U+2028 and the like.
    path.write_text(json.dumps(ideal_start_afters(sorted_keys)), encoding="utf-8")


@dataclass(frozen=True)
class Signer:
    """Hand-rolled SigV4 for one GET on a path-style bucket URL (about 30 us per request)."""

    access_key: str
    secret_key: str
    host: str
    region: str = "us-east-1"

    def headers(self, path: str, query: list[tuple[str, str]]) -> dict[str, str]:
        now = datetime.datetime.now(datetime.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query))
        canonical_headers = f"host:{self.host}\nx-amz-content-sha256:{_EMPTY_SHA256}\nx-amz-date:{amz_date}\n"
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = "\n".join(["GET", path, canonical_query, canonical_headers, signed, _EMPTY_SHA256])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return {
            "Host": self.host,
            "x-amz-date": amz_date,
            "x-amz-content-sha256": _EMPTY_SHA256,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        }


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


class RecordWriter:
    """The scanner's parser and JSON Lines encoder on every page, into one file."""

    def __init__(self, path: Path) -> None:
        # Imported here: the plain ceiling stays standard library only.
        from scanner.records import encode_jsonl
        from scanner.storage.s3.parse import parse_list_page

        self._parse = parse_list_page
        self._encode = encode_jsonl
        self._file = path.open("wb")
        self._lock = threading.Lock()

    def page(self, body: bytes) -> int:
        """Parse and write one page; its key count."""
        records = self._parse(body.decode("utf-8"), delimited=False).records
        data = self._encode(records)
        with self._lock:
            self._file.write(data)
        return len(records)

    def close(self) -> None:
        self._file.close()


class CeilingLister:
    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        signer: Signer,
        plan: list[str | None],
        records: RecordWriter | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint_url)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._path = "/" + _quote(bucket)
        self._signer = signer
        self._plan = plan
        self._records = records
        self._next = 0
        self._lock = threading.Lock()
        self.keys = 0
        self.requests = 0
        self.errors: list[str] = []

    def run(self, threads: int) -> None:
        workers = [threading.Thread(target=self._work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _take(self) -> tuple[bool, str | None]:
        with self._lock:
            if self._next >= len(self._plan) or self.errors:
                return False, None
            self._next += 1
            return True, self._plan[self._next - 1]

    def _work(self) -> None:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._netloc, timeout=60)
        keys = requests = 0
        try:
            while True:
                more, start_after = self._take()
                if not more:
                    break
                got, sent = self._page(conn, start_after)
                keys += got
                requests += sent
        except Exception as exc:  # noqa: BLE001 - any failure ends the run; main() reports it
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
            with self._lock:
                self.keys += keys
                self.requests += requests

    def _page(self, conn: http.client.HTTPConnection, start_after: str | None) -> tuple[int, int]:
        """One ideal page; RGW may cut it short (sharded index), so finish it with its token."""
        want = PAGE
        got = sent = 0
        token: str | None = None
        while True:
            query = [("list-type", "2"), ("max-keys", str(want - got))]
            if self._records is not None:
                query.append(("encoding-type", "url"))
            if token is not None:
                query.append(("continuation-token", token))
            elif start_after is not None:
                query.append(("start-after", start_after))
            body = self._get(conn, query)
            sent += 1
            got += body.count(b"<Key>") if self._records is None else self._records.page(body)
            # A whole plan page ends at the next planned StartAfter; only a short truncated page
            # (or the bucket's last page, which is not truncated) needs another look.
            if got >= want or b"<IsTruncated>true</IsTruncated>" not in body:
                return got, sent
            start = body.find(b"<NextContinuationToken>")
            end = body.find(b"</NextContinuationToken>", start)
            if start < 0 or end < 0:
                raise RuntimeError("truncated page without NextContinuationToken")
            token = xml_unescape(body[start + len(b"<NextContinuationToken>") : end].decode())

    def _get(self, conn: http.client.HTTPConnection, query: list[tuple[str, str]]) -> bytes:
        status, body = signed_get(conn, self._signer, self._path, query)
        if status != 200 or b"<ListBucketResult" not in body[:512]:
            raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
        return body


def signed_get(
    conn: http.client.HTTPConnection, signer: Signer, path: str, query: list[tuple[str, str]]
) -> tuple[int, bytes]:
    target = path + "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query)
    conn.request("GET", target, headers=signer.headers(path, query))
    response = conn.getresponse()
    return response.status, response.read()


_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|lt|gt|amp|quot|apos);")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def xml_unescape(text: str) -> str:
    """XML's five entities and numeric references, as sent: html.unescape would drop or remap
    the control characters RGW writes as numeric references (&#11; and the like)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("#x"):
            return chr(int(name[2:], 16))
        if name.startswith("#"):
            return chr(int(name[1:]))
        return _NAMED[name]

    return _ENTITY.sub(one, text)


def count_objects(endpoint_url: str, bucket: str, access_key: str, secret_key: str) -> int | None:
    """The bucket's exact object count, from raw sequential pages; None if there is no bucket.

    Seconds for 100k keys where botocore's paginator takes ten or more: the harness checks every
    seeded bucket this way at each run before deciding whether to seed it.
    """
    parts = urllib.parse.urlsplit(endpoint_url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.netloc, timeout=60)
    signer = Signer(access_key, secret_key, parts.netloc)
    path = "/" + _quote(bucket)
    total = 0
    token: str | None = None
    try:
        while True:
            query = [("list-type", "2"), ("max-keys", str(PAGE))]
            if token is not None:
                query.append(("continuation-token", token))
            status, body = signed_get(conn, signer, path, query)
            if status == 404 and b"NoSuchBucket" in body:
                return None
            if status != 200 or b"<ListBucketResult" not in body[:512]:
                raise RuntimeError(f"counting s3://{bucket}: HTTP {status}: {body[:300]!r}")
            total += body.count(b"<Key>")
            start = body.find(b"<NextContinuationToken>")
            if b"<IsTruncated>true</IsTruncated>" not in body or start < 0:
                return total
            end = body.find(b"</NextContinuationToken>", start)
            token = xml_unescape(body[start + len(b"<NextContinuationToken>") : end].decode())
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--plan", type=Path, required=True, help="JSON list of StartAfter keys")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    parser.add_argument(
        "--records", type=Path, help="parse every page as the scanner does and write its JSON Lines here"
    )
    args = parser.parse_args(argv)
    plan: list[str | None] = json.loads(args.plan.read_text(encoding="utf-8"))
    signer = Signer(
        os.environ["AWS_ACCESS_KEY_ID"],
        os.environ["AWS_SECRET_ACCESS_KEY"],
        urllib.parse.urlsplit(args.endpoint_url).netloc,
        args.region,
    )
    records = RecordWriter(args.records) if args.records else None
    lister = CeilingLister(args.endpoint_url, args.bucket, signer, plan, records)
    try:
        lister.run(args.threads)
    finally:
        if records is not None:
            records.close()
    if lister.errors:
        print(f"error: {lister.errors[0]}", file=sys.stderr)
        return 1
    print(f"{lister.keys} keys, {lister.requests} requests", file=sys.stderr if records else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
