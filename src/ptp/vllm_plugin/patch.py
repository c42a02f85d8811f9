"""Makes vLLM 0.32 sample and verify the way PTP does (imports vLLM; installed by ``ptp.vllm_plugin``).

Three methods are replaced, nothing else:
- ``GPUModelRunner._sample`` (the CPU runner inherits it) first records each row's seed, prompt length,
  generated count and sampling parameters (``RowSampling``), then runs vLLM's own ``_sample``;
- ``Sampler.sample`` picks every row's token by inverse CDF with u = f(seed, generated index)
  (``exact.sample_rows``) after vLLM's logits processors (penalties, bad words, logit bias) ran;
- ``RejectionSampler.forward`` verifies drafts by exact match under the same u (``exact.verify_rows``)
  instead of drawing its own uniforms.
Warm-up and profiling runs (no rows recorded) go to vLLM's originals.

``install_features`` (called by ``PTPProposer`` whatever the sampler) wraps
``GPUModelRunner.propose_draft_token_ids`` to keep the step's last hidden states where the proposer can
read them (``step_features``): the drafter's features, so its worker need not run the teacher again.
"""

from __future__ import annotations

import logging

import torch

from ptp.sampling import CDF_ORDERS
from ptp.vllm_plugin.exact import RowSampling, UStreams, request_seed, sample_rows, sampling_config, verify_rows

log = logging.getLogger("vllm.plugins.ptp")  # under vLLM's logger, so its handler prints it

PROCESSED_MODES = ("processed_logits", "processed_logprobs")
RAW_ONLY = "ptp's exact sampler returns raw logprobs only (logprobs_mode raw_logprobs or raw_logits)"

_streams = UStreams()
_sampling: list[RowSampling] | None = None  # rows of the _sample call in progress
_batch: list[RowSampling] | None = None  # rows of the last _sample call (read by the proposer)
_warned_min_p: set[str] = set()
_features: list[tuple[str, int, torch.Tensor]] | None = None  # per row: (request id, first position, [q, H])


def last_batch() -> list[RowSampling] | None:
    """The rows of the runner's last sampling call, by batch index; None before any (or without the patch)."""
    return _batch


def streams() -> UStreams:
    return _streams


def step_features() -> list[tuple[str, int, torch.Tensor]] | None:
    """Per batch row, the teacher's last hidden states of the tokens it ran this step: (request id, position
    of the first, [q, H], q >= 0); None outside a proposal."""
    return _features


def _row_features(runner, hidden_states: torch.Tensor) -> list[tuple[str, int, torch.Tensor]]:
    starts = runner.query_start_loc.np
    rows = []
    for i, req_id in enumerate(runner.input_batch.req_ids):
        a, b = int(starts[i]), int(starts[i + 1])
        rows.append((req_id, int(runner.positions[a]) if b > a else 0, hidden_states[a:b]))
    return rows


def install_features() -> None:
    """Keep each step's hidden states for the proposer (``step_features``) while vLLM asks it for drafts."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if getattr(GPUModelRunner.propose_draft_token_ids, "_ptp_features", False):
        return
    original = GPUModelRunner.propose_draft_token_ids

    def propose_draft_token_ids(self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states,
                                *args, **kwargs):
        global _features
        _features = _row_features(self, hidden_states)
        try:
            return original(self, scheduler_output, sampled_token_ids, sampling_metadata, hidden_states,
                            *args, **kwargs)
        finally:
            _features = None

    propose_draft_token_ids._ptp_features = True
    GPUModelRunner.propose_draft_token_ids = propose_draft_token_ids


def _rows(runner, order: str) -> list[RowSampling]:
    rows = []
    for req_id in runner.input_batch.req_ids:
        state = runner.requests[req_id]
        params = state.sampling_params
        if params.min_p and req_id not in _warned_min_p:
            _warned_min_p.add(req_id)
            log.warning("request %s: min_p=%s is not applied by ptp's exact sampler", req_id, params.min_p)
        rows.append(RowSampling(seed=request_seed(params.seed, req_id), prompt_len=state.num_prompt_tokens,
                                generated=len(state.output_token_ids),
                                sampling=sampling_config(params.temperature, params.top_k, params.top_p, order)))
    return rows


def install(order: str) -> None:
    """Replace vLLM's sampling and verification by PTP's exact match, CDF laid out in ``order``."""
    if order not in CDF_ORDERS:
        raise ValueError(f"CDF order must be one of {CDF_ORDERS}, got {order!r}")
    from vllm.v1.outputs import SamplerOutput
    from vllm.v1.sample.rejection_sampler import RejectionSampler
    from vllm.v1.sample.sampler import Sampler
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if getattr(GPUModelRunner._sample, "_ptp_exact", False):
        return
    original_runner_sample, original_sample, original_forward = (
        GPUModelRunner._sample, Sampler.sample, RejectionSampler.forward)

    def runner_sample(self, logits, spec_decode_metadata):
        global _sampling, _batch
        if self.use_async_scheduling:
            raise RuntimeError("ptp's exact sampler needs vLLM's --no-async-scheduling")
        _sampling = _batch = _rows(self, order)
        try:
            return original_runner_sample(self, logits, spec_decode_metadata)
        finally:
            _sampling = None

    def sample(self, logits, sampling_metadata, logprobs_mode_override=None):
        rows = _sampling
        if rows is None or len(rows) != logits.shape[0]:
            return original_sample(self, logits, sampling_metadata, logprobs_mode_override)
        if (logprobs_mode_override or self.logprobs_mode) in PROCESSED_MODES:
            raise RuntimeError(RAW_ONLY)
        return sample_rows(logits, rows, _streams), None

    def forward(self, metadata, draft_probs, logits, sampling_metadata):
        rows = _sampling
        if rows is None or len(rows) != len(metadata.num_draft_tokens):
            return original_forward(self, metadata, draft_probs, logits, sampling_metadata)
        if self.is_processed_logprobs_mode:
            raise RuntimeError(RAW_ONLY)
        raw_target = logits[metadata.target_logits_indices].to(torch.float32)
        target = self.apply_logits_processors(raw_target.clone(), sampling_metadata, metadata)
        raw_bonus = logits[metadata.bonus_logits_indices].to(torch.float32)
        bonus = self.sampler.apply_logits_processors(raw_bonus.clone(), sampling_metadata, predict_bonus_token=True)
        flat = metadata.draft_token_ids.tolist()
        drafts, start = [], 0
        for m in metadata.num_draft_tokens:
            drafts.append(flat[start : start + m])
            start += m
        out = verify_rows(target, bonus, drafts, rows, _streams, metadata.max_spec_len)
        logprobs = None
        if sampling_metadata.max_num_logprobs is not None:
            logprobs = self._get_logprobs_tensors(sampling_metadata.max_num_logprobs, metadata, logits, raw_target,
                                                  raw_bonus, out)
        return SamplerOutput(sampled_token_ids=out, logprobs_tensors=logprobs)

    runner_sample._ptp_exact = True
    GPUModelRunner._sample = runner_sample
    Sampler.sample = sample
    RejectionSampler.forward = forward
    log.info("ptp exact-match sampling installed (CDF order %s)", order)
