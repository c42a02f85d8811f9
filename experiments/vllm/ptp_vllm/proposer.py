"""``PTPProposer``: vLLM's ``custom_class`` speculative proposer backed by a ptp feature-head drafter.

Start vLLM with
    --speculative-config '{"method": "custom_class", "model": "ptp_vllm.proposer.PTPProposer",
                           "num_speculative_tokens": 3}'
and the environment variables PTP_PYTHON (ptp's interpreter, e.g. .venv/bin/python) and PTP_HEAD (a
feature-head checkpoint directory). vLLM itself runs the teacher and verifies the drafts: under
greedy decoding its check is an exact match (the output equals vLLM's own non-speculative output);
under sampling its rejection sampler keeps the output distribution exact but accepts a draft with
probability p(draft), not PTP's exact match under a shared u.

The drafter runs in a child process in ptp's own environment (``draft_worker.py``; vLLM 0.32 pins
transformers < 5.20, ptp 5.24), one JSON line per decoding step for the whole batch.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

WORKER = Path(__file__).resolve().parents[1] / "draft_worker.py"


class PTPProposer:
    """Proposes up to ``num_speculative_tokens`` drafts per running request."""

    def __init__(self, vllm_config) -> None:
        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        python, head = os.environ.get("PTP_PYTHON"), os.environ.get("PTP_HEAD")
        if not python or not head:
            raise RuntimeError("PTPProposer needs PTP_PYTHON (ptp's interpreter) and PTP_HEAD (a ptp head directory)")
        self._worker = subprocess.Popen([python, str(WORKER), "--model", head], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = json.loads(self._worker.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"the ptp draft worker did not start ({WORKER})")

    def load_model(self, *args, **kwargs) -> None:
        """vLLM hands over its target model here; the drafter has its own (in the worker)."""

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, slot_mappings=None) -> list[list[int]]:
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        rows, contexts, room = [], [], []
        for i, sampled in enumerate(sampled_token_ids):
            n = int(num_tokens_no_spec[i])
            if not len(sampled) or n >= self.max_model_len:  # no draft for this request this step
                continue
            rows.append(i)
            contexts.append([int(t) for t in token_ids_cpu[i, :n]])
            room.append(min(self.k, self.max_model_len - n))
        if rows:
            self._worker.stdin.write(json.dumps({"contexts": contexts, "k": self.k}) + "\n")
            answer = json.loads(self._worker.stdout.readline())
            for i, proposal, limit in zip(rows, answer["drafts"], room, strict=True):
                drafts[i] = proposal[:limit]
        return drafts
