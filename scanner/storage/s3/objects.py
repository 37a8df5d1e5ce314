"""The botocore client used for whole objects (output uploads, state downloads), built one way.

Listing does not use it (``client.py`` sends its own GETs); objects are few and large, so
botocore's own retries and parsing are fine here.
"""

from __future__ import annotations

from typing import Any

from scanner.config import ConnectionConfig


def object_client(connection: ConnectionConfig) -> Any:
    """An async context manager yielding an aiobotocore S3 client for ``connection``."""
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
