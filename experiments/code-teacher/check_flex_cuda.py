"""Check the flex_attention training path on a CUDA GPU against dense sdpa masks, and time both.

1. Correctness: a distillation step (teacher pass + window pass + loss + backward) on a tiny random
   Llama under sdpa and under flex: logits, loss and every LoRA gradient must agree.
2. Speed and memory: the same step at a realistic size (the bundled model's shape when available,
   else a random Llama of that shape), best of a few runs per backend.
Prints a table and writes OUT/flex_check.json; exits 1 if the backends disagree.
Usage: python scripts/check_flex_cuda.py [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import ptp
from ptp.attention import set_backend
from ptp.testing import randomize_adapters, tiny_teacher
from ptp.training.distill import DistillConfig, distill_step
from ptp.training.packing import PackedBatch


def random_batch(rows: int, seq_len: int, vocab: int, docs: int, device) -> PackedBatch:
    """Rows of ``docs`` equal-length documents of random tokens."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(vocab, (rows, seq_len), generator=gen)
    length = seq_len // docs
    doc_ids = (torch.arange(seq_len) // length).clamp(max=docs - 1).expand(rows, -1).contiguous()
    positions = (torch.arange(seq_len) - doc_ids[0] * length).expand(rows, -1).contiguous()
    target_ok = positions >= 1
    return PackedBatch(tokens, doc_ids, positions, target_ok, torch.arange(rows)).to(device)


def step(model, batch, cfg, backend: str, bf16: bool = True) -> float:
    """One distillation step with gradient under ``backend`` (bf16 autocast or float32); its mean loss."""
    set_backend(model.teacher, backend)
    model.zero_grad(set_to_none=True)
    with torch.autocast(batch.tokens.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = distill_step(model, model, batch, cfg, model.cfg.sampling)
    loss = out.loss_sum / out.count
    loss.backward()
    return float(loss.detach())


def compare(device) -> dict:
    model = ptp.PTPModel.from_teacher(tiny_teacher("llama", 0, sharpness=2.0), mode="o-ptp", lora_rank=4,
                                      window=4).to(device)
    randomize_adapters(model, 0)
    batch = random_batch(2, 64, 48, 3, device)
    cfg = DistillConfig(objective="o-ptp", windows_per_row=8)
    result = {}
    for backend in ("sdpa", "flex"):
        loss = step(model, batch, cfg, backend, bf16=False)
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        result[backend] = (loss, grads)
    loss_diff = abs(result["sdpa"][0] - result["flex"][0]) / abs(result["sdpa"][0])
    grad_diff = max(float((result["sdpa"][1][n] - g).abs().max() / (result["sdpa"][1][n].abs().max() + 1e-12))
                    for n, g in result["flex"][1].items())
    return {"loss_rel_diff": loss_diff, "grad_max_rel_diff": grad_diff, "grads_compared": len(result["flex"][1])}


def timing(device, rows: int, seq_len: int, windows: int, backends=("sdpa", "flex")) -> dict:
    bundled = Path("src/ptp/assets/default-model/teacher")
    teacher = bundled if bundled.is_dir() else tiny_teacher("llama", 0)
    model = ptp.PTPModel.from_teacher(str(teacher) if isinstance(teacher, Path) else teacher, mode="o-ptp",
                                      lora_rank=32, window=8).to(device)
    vocab = model.teacher.config.vocab_size
    batch = random_batch(rows, seq_len, vocab, 4, device)
    cfg = DistillConfig(objective="o-ptp", windows_per_row=windows)
    out = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for backend in backends:
        try:
            step(model, batch, cfg, backend)  # warm-up (flex compiles here)
            sync()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                step(model, batch, cfg, backend)
                sync()
                best = min(best, time.perf_counter() - t)
            peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
            out[backend] = {"step_ms": 1000 * best, "peak_mib": peak}
        except Exception as err:  # report, do not hide: the table says which backend failed and why
            out[backend] = {"error": f"{type(err).__name__}: {err}"[:300]}
    return out


def main() -> int:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/flex-check")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    device = torch.device("cuda")
    record = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    record["correctness"] = compare(device)
    ok = record["correctness"]["loss_rel_diff"] < 1e-4 and record["correctness"]["grad_max_rel_diff"] < 1e-3
    record["timing"] = {f"B{r} S{s} N{n}": timing(device, r, s, n) for r, s, n in ((16, 256, 32), (8, 1024, 128))}
    (out_dir / "flex_check.json").write_text(json.dumps(record, indent=1) + "\n")
    c = record["correctness"]
    print(f"{record['device']}, torch {record['torch']}")
    print(f"flex vs sdpa: loss rel diff {c['loss_rel_diff']:.2e}, max grad rel diff {c['grad_max_rel_diff']:.2e} "
          f"over {c['grads_compared']} tensors -> {'OK' if ok else 'MISMATCH'}")
    for shape, backends in record["timing"].items():
        cells = [f"{b}: " + (f"{v['step_ms']:.1f} ms, {v['peak_mib']:.0f} MiB" if "step_ms" in v else v["error"])
                 for b, v in backends.items()]
        print(f"{shape}: " + " | ".join(cells))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
