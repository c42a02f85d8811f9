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
The number of drafts follows the checkpoint's ``batch_budgets`` (drafts per request by the number of
requests decoding together; 0 = none), as in ptp's own server; ``PTP_BATCH_BUDGETS`` (JSON pairs, e.g.
``[[1, 3], [2, 0]]``; ``[]`` = always ``num_speculative_tokens``) overrides them.

The drafter runs in a child process in ptp's own environment (``ptp.vllm_plugin.draft_worker``; vLLM
0.32 pins transformers < 5.20, ptp 5.24), one JSON line per decoding step for the whole batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from pathlib import Path

import torch

from ptp.model import budget_for
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
        budgets = os.environ.get("PTP_BATCH_BUDGETS")
        if budgets is None:
            config = json.loads((Path(head) / "ptp_config.json").read_text())["ptp"]
            budgets = json.dumps(config.get("batch_budgets") or [])
        self.batch_budgets = tuple((int(size), int(budget)) for size, budget in json.loads(budgets))
        drafter = os.environ.get("PTP_DRAFTER", "head")
        command = [python, "-m", "ptp.vllm_plugin.draft_worker", "--model", head, "--drafter", drafter]
        self._worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = json.loads(self._worker.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"the ptp draft worker did not start ({python} -m ptp.vllm_plugin.draft_worker)")
        patch.install_features()  # vLLM's hidden states reach propose(): the worker's teacher need not run
        self._held: dict[str, tuple[int, torch.Tensor]] = {}  # request id → features not sent to the worker yet
        self.steps = self.new_tokens = self.teacher_tokens = 0  # teacher_tokens: run by the worker's own teacher

    def close(self) -> None:
        """Stop the worker (it also stops by itself when vLLM's process ends and its stdin closes)."""
        with contextlib.suppress(BrokenPipeError):
            self._worker.stdin.close()
        self._worker.wait(timeout=60)

    def load_model(self, *args, **kwargs) -> None:
        """vLLM hands over its target model here; the drafter has its own (in the worker)."""

    def _hold_features(self) -> list[str] | None:
        """Add this step's hidden states to each request's held ones (dropping rows of rejected drafts, which
        the next step's tokens overwrite); forget finished requests. Returns the request id of each row."""
        step = patch.step_features()
        if step is None:
            return None
        for req_id, start, rows in step:
            if not rows.shape[0]:
                continue
            held = self._held.get(req_id)
            if held is not None and 0 <= start - held[0] <= held[1].shape[0]:
                start, rows = held[0], torch.cat([held[1][: start - held[0]], rows])
            self._held[req_id] = (start, rows)
        running = [req_id for req_id, _, _ in step]
        for gone in set(self._held) - set(running):
            del self._held[gone]
        return running

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, slot_mappings=None) -> list[list[int]]:
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        request_ids = self._hold_features()
        budget = budget_for(self.batch_budgets, sum(1 for sampled in sampled_token_ids if len(sampled)))
        per_request = self.k if budget is None else min(self.k, budget)
        if per_request == 0:  # no drafting at this batch size: the features wait for the next drafting step
            return drafts
        batch = patch.last_batch()
        rows, contexts, us, samplings, features = [], [], [], [], []
        for i, sampled in enumerate(sampled_token_ids):
            if not len(sampled):  # nothing new for this request this step
                continue
            n = int(num_tokens_no_spec[i])
            k = max(0, min(per_request, self.max_model_len - n))  # 0: the worker only reads the new tokens
            rows.append(i)
            contexts.append(token_ids_cpu[i, :n].tolist())  # a numpy row: plain ints in one call
            held = self._held.pop(request_ids[i], None) if request_ids else None
            features.append(None if held is None else encode_features(*held))
            if batch is None:  # vLLM's own verification: the u = 0 chain
                us.append([0.0] * k)
                samplings.append(None)
            else:  # the u's this request's next k tokens will be verified with
                row = batch[i]
                us.append(draft_u(row, n - row.prompt_len, k, patch.streams()).tolist())
                samplings.append(row.sampling.to_dict())
        if rows:
            request = {"contexts": contexts, "u": us, "sampling": samplings, "features": features}
            try:
                self._worker.stdin.write(json.dumps(request) + "\n")
                line = self._worker.stdout.readline()
            except BrokenPipeError:
                line = ""
            if not line:
                raise RuntimeError(f"the ptp draft worker stopped (exit code {self._worker.poll()}); its error is "
                                   "above in vLLM's log")
            answer = json.loads(line)
            self.steps += 1
            self.new_tokens += answer["new_tokens"]
            self.teacher_tokens += answer["teacher_tokens"]
            if self.steps % REPORT_EVERY == 0:
                log.info("ptp drafter: %d steps; the worker's teacher ran %d of %d context tokens (vLLM's hidden "
                         "states served the rest)", self.steps, self.teacher_tokens, self.new_tokens)
            for i, proposal in zip(rows, answer["drafts"], strict=True):
                drafts[i] = proposal
        return drafts
