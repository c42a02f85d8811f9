"""Time the teacher's matrix products (SmolLM2-135M shapes, float32, F.linear) per number of rows.

One decoder layer's linears (q, k, v, o, gate, up, down) times 30 layers, and the lm_head, for
M = 1, 2, 4, 8, 16 rows; minimum over repeats. Run under different BLAS settings to see whether the
growth with M is the kernels' (e.g. ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``MKL_DEBUG_CPU_TYPE=5``):

    OMP_NUM_THREADS=1 python experiments/cpu_verify_cost/mm_rows.py
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # (out, in)
LAYERS = 30
LM_HEAD = (49152, 576)
ROWS = (1, 2, 4, 8, 16)


def best_ms(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # distinct weights per layer, so every product streams its own matrix as in the model
    layers = [[torch.randn(o, i) * 0.02 for o, i in LAYER] for _ in range(LAYERS)]
    head = torch.randn(*LM_HEAD) * 0.02
    env = {k: v for k, v in os.environ.items() if k.startswith("MKL_") or k.startswith("ONEDNN")}
    print(f"env {env or '{}'}; torch {torch.__version__}")
    for m in ROWS:
        x576, x1536 = torch.randn(m, 576), torch.randn(m, 1536)

        def body(x576=x576, x1536=x1536):
            for weights in layers:
                for w in weights:
                    F.linear(x1536 if w.shape[1] == 1536 else x576, w)

        body_ms = best_ms(body, 5)
        head_ms = best_ms(lambda x=x576: F.linear(x, head))
        print(f"M={m:2d}: 30 layers' linears {body_ms:6.1f} ms, lm_head {head_ms:5.1f} ms", flush=True)


if __name__ == "__main__":
    main()
