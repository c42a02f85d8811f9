import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptp.sampling import CDF_ORDERS, SamplingConfig, bin_edges, pick, process, u_in_interval


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"order": "random"}, "order"),
    ],
)
def test_invalid_sampling_config_names_field_and_range(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**kwargs)


def test_sampling_config_round_trip():
    cfg = SamplingConfig(temperature=0.7, top_k=50, top_p=0.95, order="argmax")
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg
    # Checkpoints and shards written before CDF orders existed were sampled in id order.
    assert SamplingConfig.from_dict({"temperature": 0.7, "top_k": 50, "top_p": 0.95}).order == "id"
    assert cfg.same_distribution(SamplingConfig(temperature=0.7, top_k=50, top_p=0.95, order="id"))
    assert not cfg.same_distribution(SamplingConfig(temperature=0.8, top_k=50, top_p=0.95, order="argmax"))
    with pytest.raises(ValueError, match="unknown"):
        SamplingConfig.from_dict({"temperature": 1.0, "typical_p": 0.5})


def test_greedy_is_one_hot_with_ties_to_lowest_id():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, -1.0, 5.0, 5.0]])
    probs = process(logits, SamplingConfig(temperature=0))
    assert probs.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    assert pick(torch.tensor([0.99, 0.5]), probs).tolist() == [1, 0]


def reference_process(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Row-by-row, loop-based reference of temperature -> top-k -> top-p -> renormalise."""
    out = torch.zeros(logits.shape, dtype=torch.float64)
    for r, row in enumerate(logits.double()):
        z = row / cfg.temperature
        order = sorted(range(len(z)), key=lambda j: (-float(z[j]), j))
        keep = set(order[: cfg.top_k]) if cfg.top_k else set(order)
        kth = min(float(z[j]) for j in keep)
        keep = {j for j in range(len(z)) if float(z[j]) >= kth}  # ties at the k-th value are kept
        p = torch.zeros_like(z)
        for j in keep:
            p[j] = math.exp(float(z[j]) - float(z.max()))
        p /= p.sum()
        if cfg.top_p < 1:
            chosen, mass = [], 0.0
            for j in sorted(range(len(z)), key=lambda j: (-float(p[j]), j)):
                if mass >= cfg.top_p or p[j] == 0:
                    break
                chosen.append(j)
                mass += float(p[j])
            q = torch.zeros_like(p)
            q[chosen] = p[chosen]
            p = q / q.sum()
        out[r] = p
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    temperature=st.sampled_from([0.3, 0.7, 1.0, 1.3]),
    top_k=st.sampled_from([0, 1, 3, 10]),
    top_p=st.sampled_from([0.5, 0.9, 0.95, 1.0]),
)
def test_process_matches_dense_reference(seed, temperature, top_k, top_p):
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    logits = torch.randn(4, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    got = process(logits, cfg)
    assert got.dtype == torch.float64
    assert torch.allclose(got, reference_process(logits, cfg), atol=1e-12)
    assert torch.allclose(got.sum(-1), torch.ones(4, dtype=torch.float64))


def test_pick_hand_worked_cases():
    probs = torch.tensor([0.25, 0.0, 0.5, 0.25], dtype=torch.float64)  # exact binary fractions
    cases = {0.0: 0, 0.2499: 0, 0.25: 2, 0.7499: 2, 0.75: 3, 0.9999: 3}
    for u, token in cases.items():
        assert int(pick(u, probs)) == token, u
    # Rounding left F_V < 1: the last token with positive mass, never a zero-probability one.
    short = torch.tensor([0.5, 0.4999, 0.0])
    assert int(pick(0.99995, short)) == 1


def test_argmax_order_hand_worked_cases():
    probs = torch.tensor([0.25, 0.0, 0.5, 0.25], dtype=torch.float64)  # argmax is id 2
    # Layout along [0, 1): id 2 owns [0, .5), then id 0 [.5, .75), id 3 [.75, 1); id 1 owns nothing.
    cases = {0.0: 2, 0.4999: 2, 0.5: 0, 0.7499: 0, 0.75: 3, 0.9999: 3}
    for u, token in cases.items():
        assert int(pick(u, probs, "argmax")) == token, u
    left, right = bin_edges(probs.expand(3, -1), torch.tensor([2, 0, 3]), "argmax")
    assert left.tolist() == [0.0, 0.5, 0.75] and right.tolist() == [0.5, 0.75, 1.0]
    # Ties for the maximum go to the lowest id; sorted order lays every token out by probability.
    tied = torch.tensor([0.1, 0.3, 0.3, 0.2, 0.1], dtype=torch.float64)
    assert int(pick(0.0, tied, "argmax")) == 1 and int(pick(0.3, tied, "argmax")) == 0
    left, _ = bin_edges(tied.expand(5, -1), torch.arange(5), "sorted")
    assert torch.argsort(left).tolist() == [1, 2, 3, 0, 4]
    with pytest.raises(ValueError, match="order"):
        pick(0.5, probs, "reversed")


def test_pick_rejects_u_outside_unit_interval():
    probs = torch.tensor([0.5, 0.5])
    for bad in (-0.1, 1.0, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"u must lie in \[0, 1\)"):
            pick(bad, probs)


def test_pick_and_bin_edges_are_batched():
    probs = torch.softmax(torch.randn(2, 3, 7), -1)
    u = torch.rand(2, 3)
    tokens = pick(u, probs)
    assert tokens.shape == (2, 3)
    left, right = bin_edges(probs, tokens)
    assert left.shape == right.shape == (2, 3)
    assert bool(((left <= u) & (u < right)).all())


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    vocab=st.integers(2, 30),
    zero_fraction=st.floats(0, 0.8),
    z=st.floats(0, 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    order=st.sampled_from(CDF_ORDERS),
)
def test_u_inside_the_interval_of_t_picks_t(seed, vocab, zero_fraction, z, dtype, order):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(vocab, generator=gen, dtype=torch.float64)
    probs[torch.rand(vocab, generator=gen) < zero_fraction] = 0
    probs[int(torch.randint(vocab, (1,), generator=gen))] += 0.01
    probs = (probs / probs.sum()).to(dtype)
    for token in torch.nonzero(probs > 0)[:, 0]:
        left, right = bin_edges(probs, token, order)
        assert left < right
        u = u_in_interval(left, right, torch.tensor(z))
        assert int(pick(u, probs, order)) == int(token)
    # The positive-mass intervals tile [0, 1): in id order for "id", the argmax first otherwise.
    positive = torch.nonzero(probs > 0)[:, 0]
    lefts, rights = bin_edges(probs.expand(len(positive), -1), positive, order)
    layout = torch.argsort(lefts)
    lefts, rights = lefts[layout], rights[layout]
    assert float(lefts[0]) == 0.0 and float(rights[-1]) == 1.0
    assert torch.equal(lefts[1:], rights[:-1])
    first = int(positive[layout[0]])
    assert first == (int(positive[0]) if order == "id" else int(probs.argmax()))
    if order != "sorted":
        rest = positive[layout[1:]] if order == "argmax" else positive[layout]
        assert bool((rest[1:] > rest[:-1]).all())  # ascending ids
    else:
        assert bool((probs[positive[layout]][1:] <= probs[positive[layout]][:-1]).all())


@pytest.mark.parametrize("order", CDF_ORDERS)
def test_u_of_an_empty_interval_is_still_a_valid_u(order):
    """A zero-mass token laid out after all the mass has the interval [1, 1): its u must stay below 1."""
    probs = torch.tensor([[0.3, 0.7, 0.0, 0.0]])
    left, right = bin_edges(probs, torch.tensor([3]), order)
    assert float(left) == float(right) == 1.0
    u = u_in_interval(left, right, torch.tensor([0.5]))
    assert 0.0 <= float(u) < 1.0
    pick(u, probs, order)  # accepted (picks some token with mass)


@pytest.mark.parametrize("order", CDF_ORDERS)
def test_pick_follows_the_distribution(order):
    """Uniform u through pick reproduces the processed distribution (chi-square, 20k draws)."""
    probs = process(torch.randn(10, generator=torch.Generator().manual_seed(1)) * 2, SamplingConfig(top_p=0.9))
    u = torch.rand(20_000, generator=torch.Generator().manual_seed(2))
    counts = torch.bincount(pick(u, probs.expand(20_000, -1), order), minlength=10).double()
    expected = probs.double() * 20_000
    assert bool((counts[expected == 0] == 0).all())
    nz = expected > 0
    chi2 = float(((counts[nz] - expected[nz]) ** 2 / expected[nz]).sum())
    assert chi2 < 30.0  # df <= 9: p(chi2 > 27.9) = 0.001
