"""Attention backends: the flex_attention BlockMask path computes what the dense sdpa masks compute."""

import shutil

import pytest
import torch

import ptp
from ptp.attention import block_mask, resolve_backend, set_backend, uses_flex
from ptp.testing import randomize_adapters, tiny_teacher
from ptp.training.objectives import teacher_pass, window_pass
from ptp.training.windows import choose_windows
from test_train_windows import make_batch

CPU = torch.device("cpu")


def test_auto_is_sdpa_on_cpu_and_flex_needs_cuda_and_support():
    llama, gpt2 = tiny_teacher("llama", 0), tiny_teacher("gpt2", 0)
    assert resolve_backend("auto", llama, CPU) == "sdpa"
    assert resolve_backend("auto", gpt2, torch.device("cuda")) == "sdpa"  # GPT-2 has no flex support
    assert resolve_backend("auto", llama, torch.device("cuda")) == "flex"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_backend("flex", llama, CPU)
    with pytest.raises(ValueError, match="no flex_attention support"):
        resolve_backend("flex", gpt2, torch.device("cuda"))
    with pytest.raises(ValueError, match="attention must be one of"):
        resolve_backend("flash", llama, CPU)
    with pytest.raises(ValueError, match="attention must be one of"):
        ptp.training.TrainConfig(attention="flash")


@pytest.mark.slow  # ~30 s: flex_attention compiles through inductor
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("cc") is None,
                    reason="flex_attention on CPU compiles through inductor, which needs a C++ compiler")
def test_flex_training_passes_equal_the_dense_sdpa_passes():
    """Teacher pass (block-diagonal causal) and window pass (slots over a cache) under both backends."""
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0, sharpness=2.0), mode="o-ptp", lora_rank=4, window=4)
    randomize_adapters(model, 0)
    model.eval()
    batch = make_batch(((7, 9), (12,)), seq_len=18)
    windows = choose_windows(batch, 3, 4, 0, 0.3, seed=0)
    u = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0))
    outputs = {}
    with torch.no_grad():
        for backend in ("sdpa", "flex"):  # flex forward runs on CPU (backward needs CUDA)
            set_backend(model.teacher, backend)
            assert uses_flex(model.teacher) == (backend == "flex")
            teacher = teacher_pass(model, batch, model.cfg.sampling)
            outputs[backend] = (teacher.q, window_pass(model, batch, windows, u, teacher.cache))
    set_backend(model.teacher, "sdpa")
    real = batch.doc_ids[:, :, None] >= 0  # padding rows attend to themselves only: compare real rows
    torch.testing.assert_close(outputs["flex"][0] * real, outputs["sdpa"][0] * real, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outputs["flex"][1], outputs["sdpa"][1], atol=1e-4, rtol=1e-4)


def test_block_mask_keeps_the_dense_pattern():
    allowed = torch.rand(2, 1, 5, 9, generator=torch.Generator().manual_seed(0)) > 0.5
    allowed[..., 0] = True
    bm = block_mask(allowed)
    assert tuple(bm.shape[-2:]) == (5, 9)
    b, q, k = torch.meshgrid(torch.arange(2), torch.arange(5), torch.arange(9), indexing="ij")
    assert torch.equal(bm.mask_mod(b, torch.zeros_like(b), q, k), allowed[:, 0])


def test_block_mask_skips_exactly_the_empty_blocks():
    """Over several 128-blocks: flex computes a block iff the dense mask allows something in it."""
    q_len, k_len, size = 300, 400, 128
    qi, ki = torch.arange(q_len)[:, None], torch.arange(k_len)[None, :]
    allowed = torch.stack([ki <= qi + 100, (ki // 50) == (qi // 50)])[:, None]  # shifted causal; block diagonal
    blocks = block_mask(allowed).to_dense()  # [B, H, Q blocks, K blocks]
    padded = torch.zeros(2, 1, 3 * size, 4 * size, dtype=torch.bool)
    padded[..., :q_len, :k_len] = allowed
    want = padded.view(2, 1, 3, size, 4, size).any(dim=(3, 5))
    assert torch.equal(blocks.bool(), want)
    assert not want.all() and want.any()  # the pattern has both kinds of blocks
