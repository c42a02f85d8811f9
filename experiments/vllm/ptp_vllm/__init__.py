"""ptp drafters inside vLLM 0.32 (experiment): a ``custom_class`` speculative proposer."""
