"""ListObjectsV2 response bodies to ``ListPage``.

A compiled regular expression over the body, not an XML parser: it is what keeps a 1000-key page
near a millisecond of CPU, where botocore's parser takes tens of milliseconds
(benchmarks/results/design-figures-2026-12-03.md). The body is still checked for the
things a regex could silently get wrong: an ``<Error>`` document (S3 sends those with status 200
too), a body that is not a ListBucketResult, or one cut short (no closing tag), and the element
counts must agree.

Servers differ in the details, and this module absorbs them: element order inside ``<Contents>``
(AWS, Ceph RGW and moto all differ), extra elements (RGW's ``<Type>``), quotes around the ETag
written as ``&quot;`` or as plain ``"``, and ``EncodingType=url`` applied to keys and prefixes
(decoded with ``+`` as a space, as S3 encodes them) or not applied at all (then XML entities are
decoded instead).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final, NamedTuple
from urllib.parse import unquote, unquote_plus

from scanner.records import ObjectRecord, RecordColumns, keys_of
from scanner.storage.base import ListPage, is_strictly_increasing

_CONTENTS: Final = re.compile(r"<Contents>(.*?)</Contents>", re.S)
_FIELD: Final = re.compile(r"<(Key|LastModified|ETag|Size|StorageClass)>([^<]*)</")
_COMMON_PREFIX: Final = re.compile(r"<CommonPrefixes>\s*<Prefix>([^<]*)</Prefix>")
_TRUNCATED: Final = re.compile(r"<IsTruncated>\s*(true|false)\s*</IsTruncated>")
_NEXT_TOKEN: Final = re.compile(r"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_ENCODING: Final = re.compile(r"<EncodingType>\s*url\s*</EncodingType>")
_ERROR: Final = re.compile(r"<Error>.*?<Code>([^<]*)</Code>(?:.*?<Message>([^<]*)</Message>)?", re.S)
_LISTING_OPENINGS: Final = ("<?xml", "<ListBucketResult")
_STANDARD_TIME_LENGTH: Final = len("2026-11-28T01:28:50.000Z")


class MalformedListing(ValueError):
    """The body is neither a complete ListBucketResult nor an S3 error document."""


class NotS3Response(ValueError):
    """The body is a complete document of some other kind (an HTML page, say)."""


class ErrorDocument(Exception):
    """The body is an S3 ``<Error>`` document."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def parse_error(body: str) -> ErrorDocument | None:
    match = _ERROR.search(body, 0, 4096)
    if match is None:
        return None
    return ErrorDocument(xml_unescape(match.group(1)), xml_unescape(match.group(2) or ""))


def parse_list_page(body: str, *, delimited: bool = True) -> ListPage:
    """Parse one ListObjectsV2 body. Raises ``ErrorDocument`` or ``MalformedListing``.

    ``delimited=False`` says the request had no delimiter, so the body is not searched for
    common prefixes (a server has none to send, and the search would read the whole page).
    """
    head = body[:512]
    if "<ListBucketResult" not in head:
        error = parse_error(body)
        if error is not None:
            raise error
        start = body.lstrip()[:64]
        if any(opening.startswith(start[: len(opening)]) for opening in _LISTING_OPENINGS):
            # Empty, or XML cut short: worth another attempt.
            raise MalformedListing("the response is not a complete ListBucketResult document")
        raise NotS3Response(f"the response is not an S3 listing (it starts {start[:24]!r})")
    if not body.rstrip().endswith("</ListBucketResult>"):
        raise MalformedListing("the listing response was cut short")
    truncated = _TRUNCATED.search(body)
    if truncated is None:
        raise MalformedListing("the listing response has no IsTruncated element")
    url_encoded = _ENCODING.search(body) is not None
    decode = _decode_url if url_encoded else _decode_xml

    expected = body.count("<Contents>")
    records: Sequence[ObjectRecord] | None = (
        _parse_contents_fast(body, url_encoded, expected) if expected else []
    )
    if records is None:
        records = _parse_contents_each(body, decode)
    if expected != len(records):
        raise MalformedListing("the listing response has a damaged object entry")
    # AWS lists in key order. A complete, well-formed page out of that order is how the server
    # lists (a filesystem walk, a hash order), not damage: it is reported, never retried.
    in_key_order = is_strictly_increasing(keys_of(records))

    # A literal search finds where an element starts several times faster than a regex scan of
    # the whole body would, and most pages have no common prefixes at all.
    at = body.find("<CommonPrefixes>") if delimited else -1
    prefixes = [decode(p) for p in _COMMON_PREFIX.findall(body, at)] if at >= 0 else []
    is_truncated = truncated.group(1) == "true"
    token = _next_token(body) if is_truncated else None
    return ListPage(records, prefixes, is_truncated, token, in_key_order)


def _next_token(body: str) -> str | None:
    # Servers write the token before the entries or after them (RGW: after): looking there
    # first spares a search through the 250 kB of entries of a full page.
    entries_start, entries_end = body.find("<Contents>"), body.rfind("</Contents>")
    at = -1
    if entries_start >= 0 and entries_end >= 0:
        at = body.find("<NextContinuationToken>", entries_end)
        if at < 0:
            at = body.find("<NextContinuationToken>", 0, entries_start)
    if at < 0:
        at = body.find("<NextContinuationToken>")
    match = _NEXT_TOKEN.search(body, at) if at >= 0 else None
    return xml_unescape(match.group(1)) if match else None


_FIELDS: Final = ("Key", "LastModified", "ETag", "Size", "StorageClass")

# Inside the ETag element, the quotes S3 puts around the tag (as entities or plain) stay outside
# the group, so the page regex hands back the bare tag.
_ETAG_ANY_QUOTES: Final = r"<ETag>(?:&quot;|\")?([^<&\"]*)(?:&quot;|\")?</ETag>"
_ETAG_ENTITY_QUOTES: Final = r"<ETag>&quot;([^<&\"]*)&quot;</ETag>"
# No leading zeros: the digits go into JSON Lines as they stand (``RecordColumns``); a size
# written otherwise sends its page to the careful parser.
_SIZE: Final = r"<Size>(0|[1-9]\d*)</Size>"

_ELEMENT: Final = re.compile(r"<(\w+)>(?:[^<]*</\1>|.*?</\1>)", re.S)
_ELEMENT_TEXT: Final = re.compile(r"<(\w+)>([^<]*)</\1>")
_SPACE_BETWEEN_ELEMENTS: Final = re.compile(r"^\s|>\s+<|\s$")


class _EntryShape(NamedTuple):
    """How one server writes an entry: element order, spacing, ETag quotes, nested elements."""

    layout: tuple[str, ...]
    spaced: bool
    entity_quoted_etag: bool
    nested: frozenset[str]

    @classmethod
    def of(cls, entry: str) -> _EntryShape | None:
        layout = tuple(_ELEMENT.findall(entry))
        if not set(_FIELDS) <= set(layout):
            return None
        flat = dict(_ELEMENT_TEXT.findall(entry))
        return cls(
            layout,
            _SPACE_BETWEEN_ELEMENTS.search(entry) is not None,
            flat.get("ETag", "").startswith("&quot;"),
            frozenset(name for name in layout if name not in flat),
        )


@functools.cache
def _pattern_for(shape: _EntryShape) -> re.Pattern[str]:
    """One regex for a whole page whose entries all have ``shape``.

    Built from the first entry and compiled once per server dialect (AWS, RGW and moto each
    order, choose and space their elements differently). It spells out that dialect exactly,
    from the first field read to the last: no optional quotes or whitespace to try and no
    ``.*?`` to backtrack through. What lies around that stretch (``<Contents>``, RGW's trailing
    ``<Owner>`` and ``<Type>``) is left to the search for the next ``<Key>``, which skips text
    faster than matching it would (figures: benchmarks/results/design-figures-2026-12-03.md).
    An entry of another shape does not match, and the page goes to the careful parser.
    """
    read = [index for index, name in enumerate(shape.layout) if name in _FIELDS]
    parts = []
    for name in shape.layout[read[0] : read[-1] + 1]:
        if name == "ETag":
            parts.append(_ETAG_ENTITY_QUOTES if shape.entity_quoted_etag else _ETAG_ANY_QUOTES)
        elif name == "Size":
            parts.append(_SIZE)
        elif name in _FIELDS:
            parts.append(rf"<{name}>([^<]*)</{name}>")
        elif name in shape.nested:
            parts.append(rf"<{name}>(?:[^<]*|.*?)</{name}>")
        else:
            parts.append(rf"<{name}>[^<]*</{name}>")
    space = r"\s*" if shape.spaced else ""
    return re.compile(space.join(parts), re.S)


def _parse_contents_fast(body: str, url_encoded: bool, expected: int) -> RecordColumns | None:
    """All entries with one ``findall``; None when the page does not fit the fast shape.

    The shape comes from the first entry. Any entry shaped differently where it is read (a
    missing element, an extra one between its fields, other spacing, an ETag with unusual
    characters) is not matched, so the page yields fewer matches than entries and goes to the
    careful parser instead; elements before its first field or after its last are not read.

    Everything after the ``findall`` works a column at a time (a page's keys, its sizes...), in
    C where it can: per-record Python code costs more than the regex. The columns are the page:
    records are made from them only if something asks (``RecordColumns``).
    """
    start = body.find("<Contents>")
    end = body.find("</Contents>", start)
    if end < 0:
        return None
    shape = _EntryShape.of(body[start + len("<Contents>") : end])
    if shape is None:
        return None
    rows = _pattern_for(shape).findall(body, start)
    if len(rows) != expected:
        return None
    columns = list(zip(*rows, strict=True))
    order = [name for name in shape.layout if name in _FIELDS]
    keys, times, etags, sizes, classes = (columns[order.index(name)] for name in _FIELDS)
    standard = _STANDARD_TIME_LENGTH
    if set(map(len, times)) != {standard}:
        times = tuple(t if len(t) == standard else normalize_time(t) for t in times)
    if "" in classes:
        classes = tuple(c or "STANDARD" for c in classes)
    return RecordColumns(
        _decode_url_keys(keys) if url_encoded else _decode_xml_keys(keys), sizes, times, etags, classes
    )


def _decode_url_keys(keys: Sequence[str]) -> Sequence[str]:
    """URL-encoded keys, decoded a page at a time.

    No escape or entity spans the newline between two keys, so decoding the joined page is
    decoding each key; a key that decodes to a newline of its own shows in the count, and then
    each key is decoded apart.
    """
    decoded = _decode_url_key("\n".join(keys)).split("\n")
    return decoded if len(decoded) == len(keys) else [_decode_url_key(key) for key in keys]


def _decode_xml_keys(keys: Sequence[str]) -> Sequence[str]:
    if "&" in "".join(keys):
        return [_decode_xml(key) for key in keys]
    return keys


def _decode_url_key(key: str) -> str:
    if "%" not in key and "+" not in key and "&" not in key:
        return key
    simple = key.replace("%2F", "/")
    if "%" not in simple and "+" not in simple and "&" not in simple:
        return simple
    return _decode_url(key)


def _parse_contents_each(body: str, decode: Callable[[str], str]) -> list[ObjectRecord]:
    """Entry by entry, fields in any order, any missing: the careful path."""
    records: list[ObjectRecord] = []
    for block in _CONTENTS.findall(body):
        fields = dict(_FIELD.findall(block))
        try:
            key = fields["Key"]
            size = int(fields["Size"])
            modified = fields["LastModified"]
        except (KeyError, ValueError) as exc:
            raise MalformedListing("an object entry lacks its Key, Size or LastModified") from exc
        if "%" in key or "+" in key or "&" in key:
            key = decode(key)
        records.append(
            ObjectRecord(
                key,
                size,
                modified if len(modified) == _STANDARD_TIME_LENGTH else normalize_time(modified),
                _clean_etag(fields.get("ETag", "")),
                fields.get("StorageClass") or "STANDARD",
            )
        )
    return records


def _clean_etag(etag: str) -> str:
    if etag.startswith("&quot;"):
        return etag[6:-6] if etag.endswith("&quot;") else etag[6:]
    if "&" in etag:
        etag = xml_unescape(etag)
    return etag.strip('"')


_ENTITY: Final = re.compile(r"&(?:#x([0-9A-Fa-f]+)|#([0-9]+)|(lt|gt|amp|quot|apos));")
_NAMED: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _entity(match: re.Match[str]) -> str:
    hex_value, decimal, name = match.groups()
    if name:
        return _NAMED[name]
    # Numeric references are taken as they are, control characters included: RGW writes
    # "&#x01;" for such a character in a continuation token (not valid XML 1.0, but meant).
    return chr(int(hex_value, 16) if hex_value else int(decimal))


def xml_unescape(value: str) -> str:
    """XML's five entities and numeric character references; nothing else (HTML's are not XML)."""
    return _ENTITY.sub(_entity, value) if "&" in value else value


def _decode_url(value: str) -> str:
    # S3 form-encodes keys (a space becomes "+", a plus "%2B"); decode the same way.
    return unquote_plus(xml_unescape(value) if "&" in value else value, errors="strict")


def _decode_xml(value: str) -> str:
    return xml_unescape(value) if "&" in value else value


def decode_url_component(value: str) -> str:
    """Decode a value the server URL-encoded without form rules (used for echoed parameters)."""
    return unquote(value, errors="strict")


def normalize_time(value: str) -> str:
    """Any ISO 8601 time the server sent, as UTC with milliseconds: 2026-11-28T01:28:50.000Z."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedListing(f"unreadable LastModified value {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"
