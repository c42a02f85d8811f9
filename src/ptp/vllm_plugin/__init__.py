"""ptp inside vLLM 0.32: a drafter proposer and PTP's exact-match verifier, for users who run vLLM.

- ``ptp.vllm_plugin.proposer.PTPProposer``: vLLM's ``custom_class`` speculative proposer backed by a ptp
  feature-head drafter (``--speculative-config '{"method": "custom_class", "model":
  "ptp.vllm_plugin.proposer.PTPProposer", "num_speculative_tokens": 3}'``).
- ``register`` (the ``vllm.general_plugins`` entry point, run by vLLM in each of its processes): with
  ``PTP_VLLM_EXACT=1`` it makes vLLM pick every token by inverse CDF with u = f(request seed, generated
  index) and verify drafts by exact match under the same u (``ptp.vllm_plugin.patch``).

Environment variables: ``PTP_VLLM_EXACT`` (1 = exact sampling and verification), ``PTP_VLLM_ORDER``
(the CDF order; default: the drafter's, read from ``PTP_HEAD``, else "id"), ``PTP_HEAD`` (the drafter
checkpoint directory), ``PTP_PYTHON`` (the interpreter of ptp's own environment, for the draft worker).
Neither module imports vLLM until vLLM calls it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TRUE = ("1", "true", "yes", "on")


def drafter_order(head: str | None) -> str | None:
    """The CDF order a ptp checkpoint was trained with (its ptp_config.json), or None."""
    if not head:
        return None
    config = Path(head) / "ptp_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"PTP_HEAD={head!r} has no ptp_config.json")
    return json.loads(config.read_text())["ptp"]["sampling"].get("order", "id")


def exact_order() -> str:
    """The CDF order exact sampling uses: PTP_VLLM_ORDER, else the drafter's, else "id"."""
    return os.environ.get("PTP_VLLM_ORDER") or drafter_order(os.environ.get("PTP_HEAD")) or "id"


def register() -> None:
    """vLLM's plugin hook: install exact-match sampling when PTP_VLLM_EXACT is set, else do nothing."""
    if os.environ.get("PTP_VLLM_EXACT", "").lower() in TRUE:
        from ptp.vllm_plugin.patch import install

        install(exact_order())
