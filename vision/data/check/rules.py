"""The rules `vision data check` applies to what the scan kept of every chip.

Each rule takes the scanned chips (or the class counts) and returns `Issue`s: chips whose
band count, dtype or size differs from the rest; duplicates within a split and leakage
across splits; class imbalance and classes missing from a split; files a reader would
skip. None of them reads a chip again.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vision.data.check.report import Issue
from vision.data.check.scan import Chip, ScanSplit
from vision.data.layout import subdirs
from vision.raster import IMAGE_SUFFIXES


def majority(values: Iterable[Any]) -> Any:
    """The most common value (the first seen among equals), ``None`` for no values."""
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else None


def mismatches(
    chips: list[Chip], bands: int | None, dtype: str | None, asked: tuple[int | None, str | None]
) -> list[Issue]:
    """Chips whose band count or dtype is not the expected one."""
    why_bands = "as asked" if asked[0] else "the majority of chips"
    why_dtype = "as asked" if asked[1] else "the majority of chips"
    out: list[Issue] = []
    for c in chips:
        if c.bands != bands:
            out.append(Issue(
                "bands", c.path, f"has {c.bands} bands, expected {bands} ({why_bands})", c.split
            ))
        if c.dtype != dtype:
            out.append(Issue(
                "dtype", c.path, f"is {c.dtype}, expected {dtype} ({why_dtype})", c.split
            ))
    return out


def odd_sizes(chips: list[Chip], expected: tuple[int, int] | None) -> list[Issue]:
    """Warnings for chips whose size is not the most common one."""
    if expected is None:
        return []
    return [
        Issue("size", c.path, f"is {c.size[0]}x{c.size[1]} px, most chips are "
              f"{expected[0]}x{expected[1]}", c.split)
        for c in chips if c.size != expected
    ]


def ratio(per_class: dict[str, int]) -> float | None:
    """Largest over smallest non-empty class; ``None`` when no class has samples."""
    present = [n for n in per_class.values() if n > 0]
    return max(present) / min(present) if present else None


def balance_issues(
    class_counts: dict[str, dict[str, int]],
    imbalance: dict[str, float | None],
    threshold: float,
) -> list[Issue]:
    """Warnings for splits above the imbalance threshold and classes missing from a split."""
    out: list[Issue] = []
    for split, per_class in class_counts.items():
        r = imbalance[split]
        if r is not None and r > threshold:
            present = {c: n for c, n in per_class.items() if n > 0}
            big = max(present, key=lambda c: present[c])
            small = min(present, key=lambda c: present[c])
            out.append(Issue(
                "imbalance", split,
                f"largest class {big} ({present[big]}) is {r:.1f}x the smallest "
                f"{small} ({present[small]}), above the threshold {threshold:g}", split,
            ))
        out += [
            Issue("missing-class", split, f"class {c} has no samples in this split", split)
            for c, n in per_class.items() if n == 0
        ]
    return out


def duplicates(chips: list[Chip]) -> list[Issue]:
    """Second and later copies of a chip: in the same split a duplicate, across splits leakage.

    Identical bytes are looked for first, then identical decoded pixels (the same image
    stored twice in different files, e.g. re-saved). Chips without valid pixels are left
    out of the pixel comparison: they all look alike and are errors already.
    """
    issues: list[Issue] = []
    seen: dict[str, Chip] = {}
    seen_pixels: dict[str, Chip] = {}
    for c in chips:
        first, what = seen.get(c.sha256), "bytes"
        if first is None and not c.empty:
            first, what = seen_pixels.get(c.pixels), "pixels"
        seen.setdefault(c.sha256, c)
        if not c.empty:
            seen_pixels.setdefault(c.pixels, c)
        if first is None:
            continue
        labels = ""
        if first.label != c.label:
            labels = f"; labelled {c.label} here and {first.label} there"
        if first.split != c.split:
            issues.append(Issue(
                "leakage", c.path,
                f"same {what} as {first.path} in split {first.split}{labels}", c.split,
            ))
        else:
            issues.append(
                Issue("duplicate", c.path, f"same {what} as {first.path}{labels}", c.split)
            )
    return issues


def ignored_files(root: Path, split: str) -> list[Issue]:
    """Files a reader would skip: not chips, or not inside a class folder."""
    out: list[Issue] = []
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES:
            out.append(Issue("ignored", str(f), "not in a class folder: ignored", split))
    for d in subdirs(root):
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames[:] = [n for n in dirnames if not n.startswith(".")]
            for n in sorted(filenames):
                if not n.startswith(".") and Path(n).suffix.lower() not in IMAGE_SUFFIXES:
                    out.append(Issue(
                        "ignored", os.path.join(dirpath, n),
                        f"not a chip ({', '.join(IMAGE_SUFFIXES)}): ignored", split,
                    ))
    return out


def class_order(splits: list[ScanSplit], counts: dict[str, Counter[str]]) -> list[str]:
    """Declared classes first (label order), then any other label seen, by name."""
    order: list[str] = []
    for s in splits:
        order.extend(c for c in s.classes if c not in order)
    extra = {c for n in counts.values() for c in n if c not in order}
    return order + sorted(extra, key=lambda c: (len(c), c))
