"""Key sets the integration tests seed, each built to catch a class of listing bug."""

from __future__ import annotations

import random


def utf8_sorted(keys: list[str] | set[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def nested_keys(count: int = 20_000) -> list[str]:
    """study/series/instance folders, like a DICOM archive, plus folder markers."""
    keys = []
    per_series = 50
    series_per_study = 8
    studies = -(-count // (per_series * series_per_study))
    for study in range(studies):
        for series in range(series_per_study):
            for instance in range(per_series):
                keys.append(f"study{study:04d}/series{series}/img{instance:05d}.dcm")
    return keys[:count]


def flat_keys(count: int = 20_000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(64):016x}" for _ in range(count)]


ODD_KEYS = [
    "with space.dcm",
    "plus+sign.dcm",
    "percent%20literal.dcm",
    "percent%.dcm",
    "amp&lt<gt>quot\"apos'.dcm",
    "tab\there.dcm",
    "newline\nin key.dcm",
    "carriage\rreturn.dcm",
    "control\x01\x02\x1f.dcm",
    "del\x7fchar.dcm",
    "emoji/😀/🩻.dcm",
    "cjk/日本語/ファイル.dcm",
    "accents/éàü/ñ.dcm",
    "folder/",
    "folder/inside",
    "folder//double-slash",
    "trailing/slash/",
    "/leading-slash",
    "a",
    "~tilde",
    "question?mark=1&x=2",
    "hash#fragment",
    "back\\slash",
    "star*glob[1].dcm",
    "x" * 1024,
    "é" * 512,
    "😀" * 256,
    "dir/" + "y" * 1019,
]
