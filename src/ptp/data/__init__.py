"""Data layer: token shards, document loaders, the Python-code corpus, tokenizer, prompts, pregeneration."""

from ptp.data.shards import ShardWriter, TokenShards, read_manifest

__all__ = ["ShardWriter", "TokenShards", "read_manifest"]
