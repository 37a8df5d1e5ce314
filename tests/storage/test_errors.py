"""The one map from botocore's errors for object calls to the scan's error tree."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from scanner.errors import AccessError, BucketNotFoundError, EndpointError, ScanError
from scanner.storage.errors import ObjectCall, ObjectMissing, object_errors

CALL = ObjectCall("write", "writing", "s3://out/x.jsonl", "output", "the output", "s3:PutObject on arn")


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raised", "expected", "text"),
    [
        (_client_error("NoSuchBucket", 404), BucketNotFoundError, "output bucket 'out' does not exist"),
        (
            _client_error("AccessDenied", 403),
            AccessError,
            "AccessDenied writing s3://out/x.jsonl: the credentials need",
        ),
        (
            _client_error("SlowDown", 503, "Signature=abcdef0123 please"),
            ScanError,
            "SlowDown writing s3://out/x.jsonl",
        ),
        (NoCredentialsError(), AccessError, "no AWS credentials found to write the output"),
        (
            EndpointConnectionError(endpoint_url="http://x"),
            EndpointError,
            "cannot connect to write s3://out/x.jsonl",
        ),
    ],
)
def test_each_error_is_one_line_of_the_tree(raised: Exception, expected: type[ScanError], text: str) -> None:
    with pytest.raises(expected) as caught, object_errors(CALL):
        raise raised
    assert str(caught.value).startswith(text)
    assert "abcdef0123" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_key_is_an_answer_only_where_asked() -> None:
    reading = ObjectCall("read", "reading", "s3://b/state", "state", "the state", "s3:GetObject", True)
    with pytest.raises(ObjectMissing), object_errors(reading):
        raise _client_error("", 404)
    with pytest.raises(ScanError, match=r"^NoSuchKey writing") as caught, object_errors(CALL):
        raise _client_error("NoSuchKey", 404)
    assert not isinstance(caught.value, ObjectMissing)
