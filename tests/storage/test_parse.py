"""The page parser on bodies shaped like AWS's, Ceph RGW's and moto's."""

from __future__ import annotations

from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.records import ObjectRecord
from scanner.storage.s3.parse import (
    ErrorDocument,
    MalformedListing,
    NotS3Response,
    normalize_time,
    parse_list_page,
)

AWS = """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p%2F</Prefix>
<KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
<Contents><Key>p/a+b%2Bc</Key><LastModified>2026-11-28T01:28:50.000Z</LastModified>
<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag><ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm>
<Size>1234</Size><Owner><ID>x</ID></Owner><StorageClass>GLACIER_IR</StorageClass></Contents>
<Contents><Key>p/%F0%9F%98%80%0A</Key><LastModified>2026-11-28T01:28:51.000Z</LastModified>
<ETag>&quot;abc-2&quot;</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents>
<CommonPrefixes><Prefix>p/sub%2F/</Prefix></CommonPrefixes>
</ListBucketResult>"""

RGW = """<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">\
<Name>b</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><EncodingType>url</EncodingType>\
<Contents><Key>k%20x</Key><LastModified>2026-11-28T01:28:50.123Z</LastModified><ETag>&quot;e1&quot;</ETag>\
<Size>5</Size><StorageClass>STANDARD</StorageClass><Owner><ID>o</ID><DisplayName>o</DisplayName></Owner>\
<Type>Normal</Type></Contents></ListBucketResult>"""

MOTO = """<?xml version="1.0" encoding="utf-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated><Contents>\
<Key>plain&amp;&lt;</Key><LastModified>2026-11-28T03:22:57.000Z</LastModified><ETag>"9dd4"</ETag>\
<Size>1</Size><StorageClass>STANDARD</StorageClass></Contents><Name>b</Name></ListBucketResult>"""


def test_aws_body() -> None:
    page = parse_list_page(AWS)
    assert page.records == [
        ObjectRecord(
            "p/a b+c", 1234, "2026-11-28T01:28:50.000Z", "9b2cf535f27731c974343645a3985328", "GLACIER_IR"
        ),
        ObjectRecord("p/😀\n", 0, "2026-11-28T01:28:51.000Z", "abc-2", "STANDARD"),
    ]
    assert page.common_prefixes == ["p/sub//"]
    assert page.is_truncated
    assert page.next_token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="


def test_rgw_body_with_extra_elements() -> None:
    page = parse_list_page(RGW)
    assert page.records == [ObjectRecord("k x", 5, "2026-11-28T01:28:50.123Z", "e1", "STANDARD")]
    assert not page.is_truncated
    assert page.next_token is None


def test_body_without_url_encoding_decodes_entities() -> None:
    page = parse_list_page(MOTO)
    assert page.records[0].key == "plain&<"
    assert page.records[0].etag == "9dd4"


def test_error_document_with_status_200() -> None:
    body = "<?xml version='1.0'?>\n<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
    with pytest.raises(ErrorDocument) as caught:
        parse_list_page(body)
    assert caught.value.code == "SlowDown"


@pytest.mark.parametrize("cut", [0, 10, 100, len(AWS) // 2, len(AWS) - 5])
def test_truncated_body_is_malformed(cut: int) -> None:
    with pytest.raises(MalformedListing):
        parse_list_page(AWS[:cut])


def test_damaged_entry_is_malformed() -> None:
    with pytest.raises(MalformedListing):
        parse_list_page(RGW.replace("<Size>5</Size>", ""))


def test_html_is_not_s3() -> None:
    with pytest.raises(NotS3Response):
        parse_list_page("<!DOCTYPE html><html><body>Welcome to nginx!</body></html>")


def test_time_normalisation() -> None:
    assert normalize_time("2026-11-28T01:28:50Z") == "2026-11-28T01:28:50.000Z"
    assert normalize_time("2026-11-28T02:28:50.5+01:00") == "2026-11-28T01:28:50.500Z"


@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_any_key_survives_url_encoding(key: str) -> None:
    body = RGW.replace("k%20x", quote_plus(key, safe="/"))
    assert parse_list_page(body).records[0].key == key


def test_numeric_references_to_control_characters() -> None:
    """RGW escapes a control character in a continuation token as a numeric reference."""
    body = RGW.replace("<IsTruncated>false</IsTruncated>", "<IsTruncated>true</IsTruncated>").replace(
        "</ListBucketResult>",
        "<NextContinuationToken>ctl&#x01;char &amp; more</NextContinuationToken></ListBucketResult>",
    )
    assert parse_list_page(body).next_token == "ctl\x01char & more"


_TOKEN = "<NextContinuationToken>t&amp;1</NextContinuationToken>"
_TWO_ENTRIES = RGW.replace("<IsTruncated>false</IsTruncated>", "<IsTruncated>true</IsTruncated>").replace(
    "</Contents>",
    "</Contents><Contents><Key>z</Key><LastModified>2026-11-28T01:28:50.123Z</LastModified>"
    "<ETag>&quot;e2&quot;</ETag><Size>6</Size><StorageClass>STANDARD</StorageClass></Contents>",
)


@pytest.mark.parametrize(
    "body",
    [
        _TWO_ENTRIES.replace("<Contents>", _TOKEN + "<Contents>", 1),
        _TWO_ENTRIES.replace("</ListBucketResult>", _TOKEN + "</ListBucketResult>"),
        _TWO_ENTRIES.replace("</Contents>", "</Contents>" + _TOKEN, 1),
        _TWO_ENTRIES[: _TWO_ENTRIES.find("<Contents>")] + _TOKEN + "</ListBucketResult>",
    ],
    ids=["before the entries", "after them", "between two", "no entries"],
)
def test_the_token_is_read_wherever_the_server_writes_it(body: str) -> None:
    assert parse_list_page(body).next_token == "t&1"


def test_a_page_that_is_not_truncated_has_no_token() -> None:
    """A token past the last page leads nowhere: it is not read."""
    assert (
        parse_list_page(RGW.replace("</ListBucketResult>", _TOKEN + "</ListBucketResult>")).next_token is None
    )


def test_prefixes_are_read_only_from_a_delimited_listing() -> None:
    assert parse_list_page(AWS, delimited=False).common_prefixes == []
    assert parse_list_page(AWS, delimited=False).records == parse_list_page(AWS).records
