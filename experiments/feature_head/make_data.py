"""Teacher samples + features on self-built chat instructions (never Spec-Bench), resumable.

  python experiments/feature_head/make_data.py OUT_DIR --num-prompts 2000 --seed 0 [--threads 1]
"""
import argparse
import sys
import time

import torch
from transformers import AutoTokenizer

from ptp.data.chat_prompts import chat_instructions
from ptp.data.features import FeatureConfig, write_features
from transformers import AutoModelForCausalLM
from ptp.sampling import SamplingConfig

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--teacher", default="/root/.cache/ptp/quick-smollm2")
p.add_argument("--num-prompts", type=int, default=2000)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--max-new-tokens", type=int, default=160)
p.add_argument("--temperature", type=float, default=0.7)
args = p.parse_args()
torch.set_num_threads(args.threads)
tok = AutoTokenizer.from_pretrained(args.teacher)
teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32).eval()
texts = chat_instructions(args.num_prompts, args.seed)
prompts = []
for t in texts:
    ids = tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    prompts.append(list(ids)[-384:])
sampling = SamplingConfig(temperature=args.temperature, top_k=50, top_p=0.95) if args.temperature else SamplingConfig(temperature=0)
cfg = FeatureConfig(sampling=sampling, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                    seed=args.seed, eos_token_id=tok.eos_token_id)
start = time.time()
def progress(done, total):
    print(f"{time.strftime('%H:%M:%S')} {done}/{total} prompts ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
write_features(teacher, prompts, cfg, args.out, progress)
