import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

import ptp
from ptp.masks import step_mask, step_positions
from ptp.testing import FAMILIES, randomize_adapters, tiny_teacher


def reference_step_mask(cache_len, verify_len, sizes, first_slot_token=False):
    """Loop-built reference from the definition in ptp.masks (first_slot_token: the group's first slot
    replaces verify row d, so the group sees rows < d)."""
    rows = [("w", j, None) for j in range(verify_len)]
    rows += [("g", i, d) for d, b in enumerate(sizes) for i in range(b)]
    q = len(rows)
    out = torch.zeros(q, cache_len + q, dtype=torch.bool)
    for r, (kind, i, d) in enumerate(rows):
        for k in range(cache_len + q):
            if k < cache_len:
                out[r, k] = True
                continue
            kind2, i2, d2 = rows[k - cache_len]
            if kind == "w":
                out[r, k] = kind2 == "w" and i2 <= i
            else:
                last_row = d - 1 if first_slot_token else d
                out[r, k] = (kind2 == "w" and i2 <= last_row) or (kind2 == "g" and d2 == d and i2 <= i)
    return out


@settings(max_examples=100, deadline=None)
@given(cache_len=st.integers(0, 6), verify_len=st.integers(1, 5), first_slot_token=st.booleans(), data=st.data())
def test_step_mask_matches_reference(cache_len, verify_len, first_slot_token, data):
    sizes = data.draw(st.lists(st.integers(0, 4), min_size=0, max_size=verify_len))
    got = step_mask(cache_len, verify_len, sizes, first_slot_token=first_slot_token)[0, 0]
    assert torch.equal(got, reference_step_mask(cache_len, verify_len, sizes, first_slot_token))


def test_step_positions_follow_the_slot_convention():
    # cache 4, verify rows [pending, d0, d1], groups of 2, 0 and 1 slots
    o = step_positions(4, 3, [2, 0, 1], slot_offset=0)[0].tolist()
    c = step_positions(4, 3, [2, 0, 1], slot_offset=1)[0].tolist()
    assert o == [4, 5, 6, 4, 5, 6]  # O-PTP: group d slot i at cache + d + i
    assert c == [4, 5, 6, 5, 6, 7]  # C-PTP: one further (in place of the token it carries u for)


@pytest.mark.parametrize("family", FAMILIES)
def test_grouped_call_equals_each_hypothesis_alone(family):
    """One PQD call = the verify rows + each group run on its own assumed prefix."""
    model = ptp.PTPModel.from_teacher(tiny_teacher(family), lora_rank=4).eval()
    randomize_adapters(model, seed=5)
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(48, (1, 6), generator=gen)
    verify_rows = torch.randint(48, (1, 3), generator=gen)  # pending + 2 drafts
    sizes = [2, 3, 2]
    u_slots = torch.rand(1, sum(sizes), generator=gen)

    def cache_of(tokens):
        cache = DynamicCache(config=model.teacher.config)
        n = tokens.shape[1]
        model(tokens, torch.zeros(1, n), torch.zeros(1, n, dtype=torch.bool), torch.arange(n)[None], cache=cache)
        return cache

    q = 3 + sum(sizes)
    tokens = torch.cat([verify_rows, torch.zeros(1, sum(sizes), dtype=torch.long)], 1)
    u = torch.cat([torch.zeros(1, 3), u_slots], 1)
    is_slot = torch.arange(q)[None] >= 3
    with torch.no_grad():
        grouped = model(tokens, u, is_slot, step_positions(6, 3, sizes, 0), step_mask(6, 3, sizes),
                        cache=cache_of(prefix)).logits[0]
        start = 3
        for d, b in enumerate(sizes):
            context = torch.cat([prefix, verify_rows[:, : d + 1]], 1)  # prefix + pending + d drafts
            n = context.shape[1]
            alone = model(torch.zeros(1, b, dtype=torch.long), u_slots[:, start - 3 : start - 3 + b],
                          torch.ones(1, b, dtype=torch.bool), torch.arange(b)[None] + n - 1,
                          torch.ones(1, 1, b, n + b, dtype=torch.bool).tril(n), cache=cache_of(context))
            assert torch.allclose(grouped[start : start + b], alone.logits[0], atol=1e-5), d
            start += b
