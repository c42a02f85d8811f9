"""KV-cache helpers shared by decoding and training / data (neither imports the other)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import DynamicCache


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first ``length`` cache entries (transformers 5.x crop takes a negative count)."""
    current = cache.get_seq_length()
    if length < current:
        cache.crop(length - current)


def padding_buckets(sizes: Sequence[int], max_padding: float) -> list[list[int]]:
    """Indices grouped by size (smallest first, ties in index order) so that padding each group to its
    largest member keeps its padded size within ``max_padding`` x its real size."""
    buckets: list[list[int]] = []
    real = 0
    for k in sorted(range(len(sizes)), key=lambda i: (sizes[i], i)):
        if buckets and (len(buckets[-1]) + 1) * sizes[k] <= max_padding * (real + sizes[k]):
            buckets[-1].append(k)
            real += sizes[k]
        else:
            buckets.append([k])
            real = sizes[k]
    return buckets
