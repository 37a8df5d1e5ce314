"""What an S3 server does when it lists, as data: server profiles, and the checks every page gets.

S3 is a family of dialects. AWS general-purpose buckets, Ceph RGW, MinIO, moto, ``rclone serve
s3`` and the JuiceFS gateway list keys in UTF-8 byte order and honour ``StartAfter``; the ranged
listing (``scanner.listing.enumerate``) relies on both. Directory buckets (S3 Express One Zone) list in
no particular order, refuse ``StartAfter`` and take only prefixes that end in ``/``; SeaweedFS
lists a filesystem walk, folder by folder; NooBaa sorts by UTF-16 code units. There the tree walk
(``scanner.listing.walk``) lists each folder once, by continuation tokens, and exactly-once rests on
folders being disjoint rather than on order.

A profile says which of those promises a server keeps. ``auto`` (the default) assumes the AWS
promises and checks them on every answer: the first answer that breaks one switches the scan to
the tree walk (``ServerOrderDiffers``). A well-formed page out of order is such an answer; a page
cut short, or one whose element counts disagree, is damage and is retried instead.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from scanner.errors import InconsistentListing, UsageError

if TYPE_CHECKING:
    from scanner.config import ScanConfig
    from scanner.keyspace import KeyRange

DIRECTORY_BUCKET_SUFFIX: Final = "--x-s3"


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What a server does with ListObjectsV2, and so how the scan lists it."""

    name: str
    summary: str
    # Keys come back in UTF-8 byte order, page after page.
    byte_order: bool
    # ``StartAfter`` is honoured exactly: the first key returned is the first one after it.
    start_after: bool
    # A non-empty ``Prefix`` must end in "/", and "/" is the only delimiter.
    folder_prefixes_only: bool = False
    # Continuation tokens walk every key exactly once. Where they do not, no listing is complete.
    consistent_pagination: bool = True
    # The promises above are assumed and checked on every answer, and dropped at the first one
    # that breaks them (``auto``); a named profile states them.
    learned: bool = False

    @property
    def ranged(self) -> bool:
        """Whether key ranges (``StartAfter`` plus an upper bound) can split the listing."""
        return self.byte_order and self.start_after


def _sorted(name: str, summary: str) -> ServerProfile:
    return ServerProfile(name, summary, byte_order=True, start_after=True)


def _unordered(name: str, summary: str, **rest: bool) -> ServerProfile:
    return ServerProfile(name, summary, byte_order=False, start_after=False, **rest)


# The dialects the scanner knows, by name (``--server-profile NAME``). The README's table of
# servers says which of them was measured against which server version.
PROFILES: Final[Mapping[str, ServerProfile]] = {
    profile.name: profile
    for profile in (
        ServerProfile(
            "auto",
            "assume UTF-8 byte order and StartAfter, check every answer, and switch to the tree "
            "walk at the first that breaks them",
            byte_order=True,
            start_after=True,
            learned=True,
        ),
        _sorted("aws", "AWS S3 general-purpose buckets: UTF-8 byte order, StartAfter exact"),
        _sorted("rgw", "Ceph RADOS Gateway: UTF-8 byte order, StartAfter exact, short pages"),
        _sorted("minio", "MinIO: UTF-8 byte order, StartAfter exact"),
        _sorted("moto", "moto server: UTF-8 byte order, StartAfter exact"),
        _sorted("rclone", "rclone serve s3: UTF-8 byte order, StartAfter exact"),
        _sorted("juicefs", "JuiceFS S3 gateway: UTF-8 byte order, StartAfter exact"),
        _unordered(
            "directory",
            "S3 Express One Zone directory buckets: no order, no StartAfter, prefixes end in /",
            folder_prefixes_only=True,
        ),
        _unordered("seaweedfs", "SeaweedFS: a filesystem walk, StartAfter follows its own order"),
        _unordered("noobaa", "NooBaa / OpenShift Data Foundation: UTF-16 code unit order"),
        _unordered("unordered", "any server that lists in another order or ignores StartAfter"),
        _unordered(
            "s3rver",
            "s3rver: continuation tokens repeat and skip keys; no listing of it is complete",
            consistent_pagination=False,
        ),
    )
}


def choose_profile(name: str, bucket: str) -> ServerProfile:
    """The profile a scan of ``bucket`` starts with; ``UsageError`` for an unknown name."""
    profile = PROFILES.get(name)
    if profile is None:
        known = ", ".join(PROFILES)
        raise UsageError(f"unknown --server-profile {name!r} (one of: {known})")
    if profile.learned and bucket.endswith(DIRECTORY_BUCKET_SUFFIX):
        # AWS names directory buckets so: what they do is documented, nothing to learn.
        return PROFILES["directory"]
    if not profile.consistent_pagination:
        raise InconsistentServer(profile)
    return profile


def check_profile(config: ScanConfig, ranges: Sequence[KeyRange] | None = None) -> ServerProfile:
    """The scan's server profile; what cannot work with it is refused before any request."""
    profile = choose_profile(config.server_profile, config.location.bucket)
    if not profile.ranged:
        _refuse_order_dependent(config, ranges, profile.name)
    return profile


def _refuse_order_dependent(config: ScanConfig, ranges: Sequence[KeyRange] | None, profile: str) -> None:
    why = f"the server profile {profile!r} lists in no byte order and without StartAfter"
    if ranges is not None or config.shard_ranges is not None:
        raise UsageError(f"--shard needs key ranges, and {why}: scan without --shard")
    if config.checkpoint is not None:
        raise UsageError(f"--checkpoint saves key ranges, and {why}: scan without --checkpoint")
    if config.processes > 1 and not config.processes_on_demand:
        raise UsageError(f"--processes splits key ranges, and {why}: use --processes 1")


class InconsistentServer(UsageError):
    def __init__(self, profile: ServerProfile) -> None:
        super().__init__(f"cannot list completely with --server-profile {profile.name}: {profile.summary}")


def order_break(keys: Sequence[str]) -> str | None:
    """Why ``keys`` (one answer, as the server sent them) are not in byte order, or None."""
    for before, after in itertools.pairwise(keys):
        if not before < after:
            return f"{after!r} came after {before!r}"
    return None


def first_page_contradiction(
    first_keys: Sequence[str], first_truncated: bool, folders: Sequence[str], direct_keys: Sequence[str]
) -> str | None:
    """Where the flat first page and the delimited listing of the same prefix disagree, or None.

    In byte order the flat first page holds every key up to its last one, so every folder
    (common prefix) and every direct key that sorts before that last key must show up in it.
    A server that walks folder by folder lists ``a/...`` before ``a-b/...`` flat, while its
    delimited listing names ``a-b/``: the page then misses a folder it should hold. This sees
    what no single page of such a server shows.
    """
    if not first_keys:
        return None
    last = first_keys[-1]
    for folder in folders:
        if (folder < last or not first_truncated) and not last.startswith(folder):
            at = bisect.bisect_left(first_keys, folder)
            if at == len(first_keys) or not first_keys[at].startswith(folder):
                return f"the folder {folder!r} sorts inside the first page, which has no key in it"
    for key in direct_keys:
        if key <= last or not first_truncated:
            at = bisect.bisect_left(first_keys, key)
            if at == len(first_keys) or first_keys[at] != key:
                return f"the key {key!r} sorts inside the first page, which does not have it"
    return None


def check_no_repeats(previous: set[str], names: Sequence[str], where: str) -> set[str]:
    """The names of this page, after checking that none was on the page before it.

    A server whose continuation tokens repeat keys may also skip some (s3rver does both): the
    listing cannot be complete, and the scan says so instead of writing a partial output.
    """
    current = set(names)
    repeated = previous & current
    if repeated or len(current) != len(names):
        name = min(repeated) if repeated else _first_duplicate(names)
        raise InconsistentListing(
            f"the server's pagination of {where} is inconsistent: it returned {name!r} twice, so it "
            "may skip keys too; no complete listing of it is possible"
        )
    return current


def _first_duplicate(names: Sequence[str]) -> str:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return ""
