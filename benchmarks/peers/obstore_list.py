"""obstore (Rust object_store) ``list``: ``python obstore_list.py BUCKET OUTPUT``.

obstore reads no AWS_ENDPOINT_URL, so the endpoint and keys are handed over explicitly; chunks of
1000 (one page each) rather than the default 50 keep its Python-side overhead at its smallest.
"""

from __future__ import annotations

import os
import sys

import obstore
from obstore.store import S3Store


def main(bucket: str, output: str) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    store = S3Store(
        bucket,
        endpoint=endpoint,
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        virtual_hosted_style_request=False,
        client_options={"allow_http": endpoint.startswith("http://")},
    )
    with open(output, "w", encoding="utf-8", newline="\n") as out:
        for chunk in obstore.list(store, chunk_size=1000):
            out.writelines(meta["path"] + "\n" for meta in chunk)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
