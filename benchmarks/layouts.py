"""Named bucket layouts the benchmarks seed. Deterministic: the same name and size always give
the same keys, so a seeded server can be reused between runs."""

from __future__ import annotations

import random
from collections.abc import Callable

LAYOUTS: dict[str, Callable[[int], list[str]]] = {}
# Shapes of real archives that plans find hard (``benchmarks.plan_balance``, sharded runs); the
# synthetic endpoint serves them too, the speed benchmarks do not run them.
SHAPES: dict[str, Callable[[int], list[str]]] = {}


def layout(name: str) -> Callable[[Callable[[int], list[str]]], Callable[[int], list[str]]]:
    def register(make: Callable[[int], list[str]]) -> Callable[[int], list[str]]:
        LAYOUTS[name] = make
        return make

    return register


@layout("dicom")
def dicom(count: int) -> list[str]:
    """study/series/instance, 8 series of 25 slices per study: 200 keys a study."""
    keys = [
        f"study{study:05d}/series{series}/img{instance:08d}.dcm"
        for study in range(-(-count // 200))
        for series in range(8)
        for instance in range(25)
    ]
    return keys[:count]


@layout("flat")
def flat(count: int) -> list[str]:
    """Random hex names in one level."""
    rng = random.Random(count)
    return sorted({f"{rng.getrandbits(80):020x}" for _ in range(count)})[:count]


@layout("skewed")
def skewed(count: int) -> list[str]:
    """One prefix holds 90% of the keys; nine others share the rest."""
    big = count * 9 // 10
    keys = [f"big/{i:09d}.bin" for i in range(big)]
    keys += [f"small{i % 9}/{i:09d}.bin" for i in range(count - big)]
    return keys


@layout("deep")
def deep(count: int) -> list[str]:
    """Eight folder levels of fan-out 3 before the file names."""
    rng = random.Random(count)
    keys = set()
    while len(keys) < count:
        folders = "/".join(f"level{depth}-{rng.randrange(3)}" for depth in range(8))
        keys.add(f"{folders}/{rng.getrandbits(40):010x}.dat")
    return sorted(keys)


@layout("unicode")
def unicode_keys(count: int) -> list[str]:
    """Multi-byte and awkward characters in every position."""
    rng = random.Random(count)
    controls = "".join(chr(c) for c in range(0x1, 0x20) if c not in (0x0A, 0x0D))
    alphabet = "aZ09 +%&<>\"'\t~éü日本語😀🩻\u00a0\u2028" + controls
    keys = set()
    while len(keys) < count:
        folder = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 16)))
        keys.add(f"{folder}/{name}")
    return sorted(keys)


@layout("studies")
def studies(count: int) -> list[str]:
    """Prefix-rich like ``dicom`` (folders of series in folders of studies), plus the sidecar names
    a real archive has next to its folders: ``seriesN.json`` beside ``seriesN/`` and a
    ``studyNNNNN-thumbs/`` folder beside ``studyNNNNN/``. Each sorts before its neighbour folder in
    UTF-8 byte order ('.' and '-' are below '/') and after it in a folder-by-folder walk, so a
    server that lists a filesystem walk (SeaweedFS) lists this layout out of byte order at every
    study; ``dicom``'s fixed-width names list the same either way. 200 keys a study: 8 series of
    23 slices and a ``.json`` each, and 8 thumbnails."""
    keys: list[str] = []
    for study in range(-(-count // 200)):
        folder = f"study{study:05d}"
        for series in range(8):
            keys += [f"{folder}/series{series}/img{instance:04d}.dcm" for instance in range(23)]
            keys.append(f"{folder}/series{series}.json")
        keys += [f"{folder}-thumbs/series{series}.png" for series in range(8)]
    return keys[:count]


def clustered(count: int) -> list[str]:
    """Four folders with 20% of the keys each, at random places among folders of 10 keys."""
    rng = random.Random(count)
    tiny = count // 5 // 10
    huge = set(rng.sample(range(tiny + 4), 4))
    keys: list[str] = []
    per_huge = (count - tiny * 10) // 4
    for folder in range(tiny + 4):
        size = per_huge if folder in huge else 10
        keys += [f"{folder:07d}/{instance:08d}.dcm" for instance in range(size)]
    return keys[:count]


def dated(count: int) -> list[str]:
    """Daily folders over ten years, each year holding twice as many keys as the one before."""
    days = [
        (year, month, day) for year in range(2015, 2025) for month in range(1, 13) for day in range(1, 29)
    ]
    weights = [2.0 ** (year - 2015) for year, _, _ in days]
    scale = count / sum(weights)
    keys: list[str] = []
    for (year, month, day), weight in zip(days, weights, strict=True):
        keys += [f"{year}/{month:02d}/{day:02d}/{n:06d}.jpg" for n in range(max(1, round(weight * scale)))]
    return keys[:count]


SHAPES.update(clustered=clustered, dated=dated)
