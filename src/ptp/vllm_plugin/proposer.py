"""``PTPProposer``: vLLM's ``custom_class`` speculative proposer backed by a ptp feature-head drafter.

Start vLLM with
    --speculative-config '{"method": "custom_class", "model": "ptp.vllm_plugin.proposer.PTPProposer",
                           "num_speculative_tokens": 3}'
and the environment variables PTP_PYTHON (ptp's interpreter, e.g. .venv/bin/python) and PTP_HEAD (a
feature-head checkpoint directory). vLLM itself runs the teacher and verifies the drafts. Its last
hidden states of each step's tokens go to the worker with the contexts, so the head reads vLLM's own
features and the worker's copy of the teacher runs only where they are missing.

- With ``PTP_VLLM_EXACT=1`` (``ptp.vllm_plugin.patch``) each request's drafts get the u's its tokens
  will be sampled with (u = f(seed, generated index)) and vLLM accepts a draft when it equals the
  teacher's pick under that u: PTP's verification, output identical to ptp's own for the seed.
- Without it, drafts are the head's u = 0 chain (the most likely tokens) and vLLM's rejection sampler
  verifies them with its own uniforms: lossless, accepted with probability p(draft).

``PTP_DRAFTER=oracle`` drafts the teacher's own picks instead of the head's (a ceiling, for measurements).

The drafter runs in a child process in ptp's own environment (``ptp.vllm_plugin.draft_worker``; vLLM
0.32 pins transformers < 5.20, ptp 5.24), one JSON line per decoding step for the whole batch.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess

from ptp.vllm_plugin import patch
from ptp.vllm_plugin.exact import draft_u
from ptp.vllm_plugin.wire import encode_features

log = logging.getLogger("vllm.plugins.ptp")
REPORT_EVERY = 100  # steps between log lines on the worker's own teacher work


class PTPProposer:
    """Proposes up to ``num_speculative_tokens`` drafts per running request."""

    def __init__(self, vllm_config) -> None:
        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        python, head = os.environ.get("PTP_PYTHON"), os.environ.get("PTP_HEAD")
        if not python or not head:
            raise RuntimeError("PTPProposer needs PTP_PYTHON (ptp's interpreter) and PTP_HEAD (a ptp head directory)")
        drafter = os.environ.get("PTP_DRAFTER", "head")
        command = [python, "-m", "ptp.vllm_plugin.draft_worker", "--model", head, "--drafter", drafter]
        self._worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = json.loads(self._worker.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"the ptp draft worker did not start ({python} -m ptp.vllm_plugin.draft_worker)")
        patch.install_features()  # vLLM's hidden states reach propose(): the worker's teacher need not run
        self.steps = self.new_tokens = self.teacher_tokens = 0  # teacher_tokens: run by the worker's own teacher

    def load_model(self, *args, **kwargs) -> None:
        """vLLM hands over its target model here; the drafter has its own (in the worker)."""

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, slot_mappings=None) -> list[list[int]]:
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        batch = patch.last_batch()
        rows, contexts, us, samplings, features = [], [], [], [], []
        for i, sampled in enumerate(sampled_token_ids):
            n = int(num_tokens_no_spec[i])
            k = min(self.k, self.max_model_len - n)
            if not len(sampled) or k <= 0:  # no draft for this request this step
                continue
            rows.append(i)
            contexts.append([int(t) for t in token_ids_cpu[i, :n]])
            ran = patch.step_features(i)
            features.append(None if ran is None else encode_features(*ran))
            if batch is None:  # vLLM's own verification: the u = 0 chain
                us.append([0.0] * k)
                samplings.append(None)
            else:  # the u's this request's next k tokens will be verified with
                row = batch[i]
                us.append(draft_u(row, n - row.prompt_len, k, patch.streams()).tolist())
                samplings.append(row.sampling.to_dict())
        if rows:
            request = {"contexts": contexts, "u": us, "sampling": samplings, "features": features}
            self._worker.stdin.write(json.dumps(request) + "\n")
            answer = json.loads(self._worker.stdout.readline())
            self.steps += 1
            self.new_tokens += answer["new_tokens"]
            self.teacher_tokens += answer["teacher_tokens"]
            if self.steps % REPORT_EVERY == 0:
                log.info("ptp drafter: %d steps; the worker's teacher ran %d of %d context tokens (vLLM's hidden "
                         "states served the rest)", self.steps, self.teacher_tokens, self.new_tokens)
            for i, proposal in zip(rows, answer["drafts"], strict=True):
                drafts[i] = proposal
        return drafts
