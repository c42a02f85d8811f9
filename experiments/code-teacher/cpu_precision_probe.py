"""Why extra query rows are not free on a CPU, and why ptp decodes in float32 there.

1. ``F.linear`` time for 1..16 rows against the bundled model's weight shapes, float32 and bfloat16.
2. One call over q query rows on a cache of 256, float32: the plain teacher (q token rows) and the PTP
   model (1 token + q - 1 u-slots, adapters on; ``ptp tune``'s measurement).
3. The bundled model decoding T=0.7 prompts with ``ar`` and PQD in float32 and in bfloat16: ms per
   call, MAT, speed-up, and how many PQD outputs are identical to ``ar`` of the same precision.
Usage: python scripts/cpu_precision_probe.py [--threads 2] [--prompts 6] [--no-decode]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, DynamicCache

import ptp
from ptp.bench.tune import forward_cost
from ptp.bundled import default_model_dir
from ptp.data.prompts import read_prompts
from ptp.decoding.step import crop_cache


def linear_us(rows: int, out_features: int, in_features: int, dtype: torch.dtype, reps: int = 400) -> float:
    """Mean microseconds of one ``F.linear`` of ``rows`` rows."""
    weight = torch.randn(out_features, in_features, dtype=dtype)
    x = torch.randn(1, rows, in_features, dtype=dtype)
    for _ in range(30):
        F.linear(x, weight)
    start = time.perf_counter()
    for _ in range(reps):
        F.linear(x, weight)
    return (time.perf_counter() - start) / reps * 1e6


def teacher_cost(teacher, q: int, context_len: int = 256, repeats: int = 15) -> float:
    """Median seconds of one plain teacher forward over q new tokens on a cache of ``context_len``."""
    cache = DynamicCache(config=teacher.config)
    teacher(torch.randint(teacher.config.vocab_size, (1, context_len)), cache=cache, use_cache=True)
    tokens = torch.randint(teacher.config.vocab_size, (1, q))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        teacher(tokens, cache=cache, use_cache=True)
        times.append(time.perf_counter() - start)
        crop_cache(cache, context_len)
    return sorted(times)[len(times) // 2]


def decode(model, prompts, method: str, budget: int | None, eos: list[int]) -> tuple[dict, list]:
    sampling = ptp.SamplingConfig(temperature=0.7, top_k=50, top_p=0.95, order=model.cfg.sampling.order)
    tokens, calls, outputs = 0, 0, []
    start = time.perf_counter()
    with torch.inference_mode():
        for i, ids in enumerate(prompts):
            out = ptp.generate(model, ids, 128, sampling, i, method, slot_budget=budget, eos_token_id=eos)
            tokens, calls = tokens + len(out.tokens), calls + out.teacher_calls
            outputs.append(out.tokens.tolist())
    seconds = time.perf_counter() - start
    return {"tok_s": tokens / seconds, "ms_call": 1000 * seconds / calls, "mat": tokens / calls}, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--no-decode", action="store_true", help="skip part 3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundled = default_model_dir()
    model = ptp.PTPModel.from_pretrained(bundled).eval()
    config = model.teacher.config
    shapes = {"lm_head": (config.vocab_size, config.hidden_size),
              "mlp up": (config.intermediate_size, config.hidden_size)}
    print("F.linear, microseconds per call (rows: 1 2 3 4 8 16)")
    for name, (out_f, in_f) in shapes.items():
        for dtype in (torch.float32, torch.bfloat16):
            cells = " ".join(f"{linear_us(r, out_f, in_f, dtype):6.0f}" for r in (1, 2, 3, 4, 8, 16))
            print(f"  {name} {out_f}x{in_f} {str(dtype).removeprefix('torch.'):8s} {cells}")
    sizes = (1, 2, 4, 8, 16)
    with torch.inference_mode():
        plain = {q: teacher_cost(model.teacher, q) for q in sizes}
        slots = forward_cost(model, 256, sizes, repeats=15)
    print("one call over q query rows, cache of 256, ms (q: " + " ".join(map(str, sizes)) + ")")
    print("  plain teacher " + " ".join(f"{1000 * plain[q]:6.2f}" for q in sizes))
    print("  ptp model     " + " ".join(f"{1000 * slots[q]:6.2f}" for q in sizes))
    if args.no_decode:
        return
    tokenizer = AutoTokenizer.from_pretrained(bundled)
    prompts = [tokenizer(p.prompt).input_ids for p in read_prompts(bundled / "prompts.jsonl")[: args.prompts]]
    eos = [tokenizer.eos_token_id]
    print(f"decoding {len(prompts)} prompts x 128 tokens, T=0.7")
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        m = model.to(dtype)
        ar, reference = decode(m, prompts, "ar", None, eos)
        print(f"  {name} ar: {ar['ms_call']:.2f} ms/call, {ar['tok_s']:.0f} tok/s")
        for budget in (2, 8, 16):
            row, outputs = decode(m, prompts, "pqd", budget, eos)
            same = sum(a == b for a, b in zip(outputs, reference, strict=True))
            print(f"  {name} pqd budget {budget}: {row['ms_call']:.2f} ms/call, MAT {row['mat']:.2f}, "
                  f"{row['tok_s'] / ar['tok_s']:.2f}x ar, identical to ar {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
