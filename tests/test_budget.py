import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptp.decoding.budget import allocate_slots, group_probabilities, survival


def test_group_probabilities_hand_worked():
    probs = group_probabilities(torch.tensor([0.5, 0.8]))
    assert probs == pytest.approx([0.5, 0.5 * 0.2, 0.5 * 0.8])


def test_survival_from_histogram_and_prior():
    assert survival([1, 1, 2], window=3) == [1.0, 0.75, 0.5, 0.0, 0.0]
    prior = survival([], window=4)
    assert prior[0] == 1.0 and all(a >= b for a, b in itertools.pairwise(prior))


def test_confident_drafts_send_the_budget_to_the_last_group():
    sizes = allocate_slots(torch.ones(4), survival([0, 0, 0, 0, 1], 4), budget=6, max_group=5, slot_offset=0)
    assert sizes == [0, 0, 0, 0, 5]  # capped at max_group; the spare slot has no use


def test_unsure_first_draft_splits_the_budget():
    sizes = allocate_slots(torch.tensor([0.5]), survival([1, 1, 1, 1], 3), budget=6, max_group=4, slot_offset=1)
    assert sum(sizes) == 6 and sizes[0] > 0 and sizes[1] > 0


@settings(max_examples=100, deadline=None)
@given(
    conf=st.lists(st.floats(0, 1), max_size=8),
    hist=st.lists(st.floats(0, 10), max_size=10),
    budget=st.integers(1, 40),
    max_group=st.integers(1, 17),
    slot_offset=st.sampled_from([0, 1]),
)
def test_allocation_respects_budget_and_caps(conf, hist, budget, max_group, slot_offset):
    sizes = allocate_slots(torch.tensor(conf, dtype=torch.float64), survival(hist, 16), budget, max_group,
                           slot_offset)
    assert len(sizes) == len(conf) + 1
    assert sum(sizes) <= budget and all(0 <= b <= max_group for b in sizes)
    if slot_offset == 0:
        assert all(b != 1 for b in sizes)  # a lone O-PTP slot predicts the verified token: no draft
