"""KV-cache helpers shared by decoding and training (neither imports the other)."""

from __future__ import annotations

from transformers import DynamicCache


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first ``length`` cache entries (transformers 5.x crop takes a negative count)."""
    current = cache.get_seq_length()
    if length < current:
        cache.crop(length - current)
