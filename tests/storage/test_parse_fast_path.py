"""The page parser's fast path against an XML parser, on bodies in every server dialect.

The fast path reads a whole page with one regex built from its first entry and decodes a column
at a time; whatever shape a body has, it must give exactly what a real XML parser reads from it
(and pages it cannot read fast must still come out right through the careful path).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.records import ObjectRecord, RecordColumns, encode_jsonl, records_from_columns
from scanner.storage.base import ListPage
from scanner.storage.s3.parse import normalize_time, parse_list_page

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"

_LAYOUTS = {
    "aws": ("Key", "LastModified", "ETag", "ChecksumAlgorithm", "Size", "Owner", "StorageClass"),
    "rgw": ("Key", "LastModified", "ETag", "Size", "StorageClass", "Owner", "Type"),
    "moto": ("Key", "LastModified", "ETag", "Size", "StorageClass"),
}
_TIMES = ("2026-11-28T01:28:50.123Z", "2026-11-28T01:28:50Z", "2026-11-28T02:28:50.5+01:00")

# XML 1.0 cannot carry control characters, nor U+FFFE and U+FFFF, so only URL-encoded bodies get them.
any_key = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
xml_key = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=12,
)


@dataclass(frozen=True)
class Dialect:
    layout: tuple[str, ...]
    separator: str
    etag_quote: str
    url_encoded: bool
    encode_slash: bool


dialects = st.builds(
    Dialect,
    st.sampled_from(sorted(_LAYOUTS.values())),
    st.sampled_from(["", "\n", "\n    "]),
    st.sampled_from(["&quot;", '"', ""]),
    st.booleans(),
    st.booleans(),
)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _key_text(key: str, dialect: Dialect) -> str:
    if not dialect.url_encoded:
        return _escape(key)
    return quote_plus(key, safe="" if dialect.encode_slash else "/")


def _entry(key: str, index: int, dialect: Dialect, time: str, storage_class: str) -> str:
    values = {
        "Key": _key_text(key, dialect),
        "LastModified": time,
        "ETag": f"{dialect.etag_quote}{index:032x}{dialect.etag_quote}",
        "ChecksumAlgorithm": "CRC64NVME",
        "Size": str(index * 1000),
        "Owner": "<ID>o</ID><DisplayName>owner</DisplayName>",
        "StorageClass": storage_class,
        "Type": "Normal",
    }
    sep = dialect.separator
    inner = sep.join(f"<{name}>{values[name]}</{name}>" for name in dialect.layout)
    return f"<Contents>{sep}{inner}{sep}</Contents>"


def _body(
    keys: list[str],
    dialect: Dialect,
    times: list[str],
    classes: list[str],
    prefixes: list[str],
    token: str | None,
) -> str:
    sep = dialect.separator
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        "<Name>b</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys>",
        f"<IsTruncated>{'true' if token else 'false'}</IsTruncated>",
    ]
    if dialect.url_encoded:
        head.append("<EncodingType>url</EncodingType>")
    entries = [
        _entry(key, i, dialect, times[i % len(times)], classes[i % len(classes)])
        for i, key in enumerate(keys)
    ]
    tail = [
        f"<CommonPrefixes><Prefix>{_key_text(prefix, dialect)}</Prefix></CommonPrefixes>"
        for prefix in prefixes
    ]
    if token is not None:
        tail.append(f"<NextContinuationToken>{_escape(token)}</NextContinuationToken>")
    return sep.join([*head, *entries, *tail, "</ListBucketResult>"])


def _read_as_xml(body: str) -> ListPage:
    """What an XML parser reads from ``body``, with S3's decoding rules."""
    root = ET.fromstring(body.encode())
    encoded = root.findtext(f"{_NS}EncodingType") == "url"

    def decode(text: str) -> str:
        return unquote_plus(text, errors="strict") if encoded else text

    records = []
    for entry in root.iter(f"{_NS}Contents"):
        modified = entry.findtext(f"{_NS}LastModified") or ""
        records.append(
            ObjectRecord(
                decode(entry.findtext(f"{_NS}Key") or ""),
                int(entry.findtext(f"{_NS}Size") or ""),
                modified if len(modified) == len(_TIMES[0]) else normalize_time(modified),
                (entry.findtext(f"{_NS}ETag") or "").strip('"'),
                entry.findtext(f"{_NS}StorageClass") or "STANDARD",
            )
        )
    prefixes = [decode(p.findtext(f"{_NS}Prefix") or "") for p in root.iter(f"{_NS}CommonPrefixes")]
    return ListPage(
        records,
        prefixes,
        root.findtext(f"{_NS}IsTruncated") == "true",
        root.findtext(f"{_NS}NextContinuationToken"),
    )


@settings(max_examples=300)
@given(
    dialect=dialects,
    data=st.data(),
    times=st.lists(st.sampled_from(_TIMES), min_size=1, max_size=3),
    classes=st.lists(st.sampled_from(["STANDARD", "GLACIER_IR", ""]), min_size=1, max_size=3),
    token=st.none() | st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=10),
)
def test_every_dialect_reads_as_an_xml_parser_reads_it(
    dialect: Dialect, data: st.DataObject, times: list[str], classes: list[str], token: str | None
) -> None:
    key = any_key if dialect.url_encoded else xml_key
    keys = sorted(data.draw(st.sets(key, min_size=1, max_size=30)))
    prefixes = data.draw(st.lists(key, max_size=3))
    body = _body(keys, dialect, times, classes, prefixes, token)
    page = parse_list_page(body)
    expected = _read_as_xml(body)
    assert page == expected
    # Columns or records, the JSON Lines are orjson's bytes for the records an XML parser reads.
    assert encode_jsonl(page.records) == encode_jsonl(expected.records)


def _body_with_one_odd_entry(dialect: Dialect, keys: set[str], odd: int, old: str, new: str) -> str:
    """A page of ``keys`` (not URL-encoded) in which entry ``odd`` has ``old`` replaced by ``new``."""
    dialect = Dialect(dialect.layout, dialect.separator, dialect.etag_quote, False, False)
    body = _body(sorted(keys), dialect, list(_TIMES[:1]), ["STANDARD"], [], None)
    entries = body.split("</Contents>")
    index = odd % (len(entries) - 1)
    entries[index] = entries[index].replace(old, new, 1)
    return "</Contents>".join(entries)


@given(dialect=dialects, keys=st.sets(xml_key, min_size=2, max_size=20), odd=st.integers(min_value=0))
def test_an_entry_of_another_shape_is_still_read(dialect: Dialect, keys: set[str], odd: int) -> None:
    """One entry unlike the first (an extra element before its fields) is still read right."""
    body = _body_with_one_odd_entry(dialect, keys, odd, "<Key>", "<Extra><a>1</a></Extra><Key>")
    assert parse_list_page(body) == _read_as_xml(body)


def test_rgw_page_decodes_slashes_only() -> None:
    keys = [f"study{i:05d}/series{i % 8}/img{i:08d}.dcm" for i in range(1000)]
    dialect = Dialect(_LAYOUTS["rgw"], "", "&quot;", True, True)
    body = _body(keys, dialect, ["2026-11-28T03:41:48.120Z"], ["STANDARD"], [], "tok")
    page = parse_list_page(body)
    assert [record.key for record in page.records] == keys
    assert page == _read_as_xml(body)


def test_a_key_with_a_newline_the_server_left_unencoded() -> None:
    """A server that says it URL-encoded keys but did not: the page-at-a-time split must not
    cut such a key in two."""
    dialect = Dialect(_LAYOUTS["moto"], "", '"', True, True)
    body = _body(["a/b", "c"], dialect, list(_TIMES[:1]), ["STANDARD"], [], None)
    body = body.replace("<Key>c</Key>", "<Key>c\nd%2Fe</Key>")
    assert [record.key for record in parse_list_page(body).records] == ["a/b", "c\nd/e"]


def test_records_from_columns_are_object_records() -> None:
    records = records_from_columns(["a", "b"], [1, 2], ["t1", "t2"], ["e1", "e2"], ["S", "G"])
    assert records == [ObjectRecord("a", 1, "t1", "e1", "S"), ObjectRecord("b", 2, "t2", "e2", "G")]
    assert all(type(record) is ObjectRecord for record in records)
    assert records[1].storage_class == "G"


@given(dialect=dialects, keys=st.sets(xml_key, min_size=2, max_size=20), odd=st.integers(min_value=0))
def test_an_entry_with_an_element_between_its_fields_is_read_carefully(
    dialect: Dialect, keys: set[str], odd: int
) -> None:
    body = _body_with_one_odd_entry(dialect, keys, odd, "</Key>", "</Key><Extra>1</Extra>")
    page = parse_list_page(body)
    assert not isinstance(page.records, RecordColumns)
    assert page == _read_as_xml(body)


def test_sizes_with_leading_zeros_are_numbers() -> None:
    dialect = Dialect(_LAYOUTS["rgw"], "", "&quot;", True, False)
    body = _body(["a", "b"], dialect, list(_TIMES[:1]), ["STANDARD"], [], None)
    body = body.replace("<Size>1000</Size>", "<Size>01000</Size>")
    page = parse_list_page(body)
    assert [record.size for record in page.records] == [0, 1000]
    assert b'"size":1000,' in encode_jsonl(page.records)
