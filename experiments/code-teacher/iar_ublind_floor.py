"""The best perplexity an inverse-AR C-PTP slot can reach WITHOUT reading its u: the u-blind floor.

The first slot of a C-PTP window carries u_s and predicts t_{s+1} from the context t_<s. If it
ignores u_s, the best it can do is the teacher's two-step marginal

    P(t_{s+1} | t_<s) = sum_c P(c | t_<s) P(t_{s+1} | t_<s, c),

computed here exactly (one extra teacher row per candidate c, so only for small vocabularies),
next to the teacher's own perplexity P(t_{s+1} | t_<=s) on the same tokens. A trained slot whose
perplexity (``slot1_ppl`` in a run's eval.csv) is below the floor reads u; at the floor it is an
independent (MTP-style) predictor; the inverse-AR target (within 5 % of the teacher) needs it to
reach the teacher's perplexity. Rows: the training CLI's validation rows (16 rows of 256 tokens);
positions: every one whose previous, own and next token are in the same document. Temperature 1.

usage: python scripts/iar_ublind_floor.py TEACHER_DIR VAL_SHARDS [--rows 16] [--chunk 24]
"""

import argparse
import math

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from ptp.attention import mask_for
from ptp.decoding.step import crop_cache
from ptp.masks import document_mask
from ptp.training.packing import DataConfig, PackingConfig
from ptp.training.setup import open_data


def row_sums(model, tokens: torch.Tensor, doc_ids: torch.Tensor, positions: torch.Tensor,
             chunk: int) -> tuple[float, float, int]:
    """(teacher NLL, u-blind NLL, count) over one packed row [S]."""
    n, vocab = tokens.shape[0], model.config.vocab_size
    cache = DynamicCache(config=model.config)
    mask = mask_for(model, document_mask(doc_ids[None]), torch.float32)
    first = model(input_ids=tokens[None], attention_mask=mask, position_ids=positions[None], cache=cache,
                  use_cache=True).logits[0].float().log_softmax(-1)  # [S, V]; row i: log P(t_{i+1} | t_<=i)
    same = (doc_ids[:-2] == doc_ids[1:-1]) & (doc_ids[1:-1] == doc_ids[2:]) & (doc_ids[1:-1] >= 0)
    sites = (torch.nonzero(same).flatten() + 1).tolist()  # s with t_{s-1}, t_s, t_{s+1} in one document
    teacher_nll = blind_nll = 0.0
    for start in range(0, len(sites), chunk):
        group = torch.tensor(sites[start : start + chunk])
        q = len(group) * vocab
        cand = torch.arange(vocab).repeat(len(group))  # query (s, c) carries candidate c at s's position
        site = group.repeat_interleave(vocab)
        keys = torch.arange(n)
        context = (keys[None, :] < site[:, None]) & (doc_ids[None, :] == doc_ids[site][:, None])  # [q, S]
        allowed = torch.cat([context, torch.eye(q, dtype=torch.bool)], dim=1)[None, None]  # [1, 1, q, S + q]
        out = model(input_ids=cand[None], attention_mask=mask_for(model, allowed, torch.float32),
                    position_ids=positions[site][None], cache=cache, use_cache=True)
        crop_cache(cache, n)
        second = out.logits[0].float().log_softmax(-1).view(len(group), vocab, vocab)  # [G, c, V]
        actual = second[torch.arange(len(group)), tokens[group]]  # the query with c = t_s
        torch.testing.assert_close(actual, first[group], atol=2e-4, rtol=1e-4)  # = the teacher's own row s
        nxt = tokens[group + 1]
        prior = first[group - 1]  # [G, V]: log P(c | t_<s)
        joint = prior + second[torch.arange(len(group)), :, nxt]  # [G, c]: log P(c, t_{s+1} | t_<s)
        blind_nll -= float(torch.logsumexp(joint, dim=-1).sum())
        teacher_nll -= float(first[group, nxt].sum())
    return teacher_nll, blind_nll, len(sites)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher")
    parser.add_argument("val")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=24, help="sites per extra call (memory)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(args.teacher, attn_implementation="sdpa").eval()
    data = open_data(DataConfig(train=args.val, val=args.val, val_rows=args.rows), PackingConfig(seq_len=256, rows=4))
    totals = [0.0, 0.0, 0]
    with torch.no_grad():
        for batch in data.val_batches:
            for r in range(batch.tokens.shape[0]):
                sums = row_sums(model, batch.tokens[r], batch.doc_ids[r], batch.positions[r], args.chunk)
                totals = [a + b for a, b in zip(totals, sums, strict=True)]
    teacher, blind, count = totals
    print({"teacher_ppl": round(math.exp(teacher / count), 3), "ublind_floor_ppl": round(math.exp(blind / count), 3),
           "floor_ratio": round(math.exp((blind - teacher) / count), 3), "positions": count})


if __name__ == "__main__":
    main()
