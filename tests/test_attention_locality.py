"""The attention probe of benchmarks/attention_locality.py on attention maps with known shares."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from benchmarks.attention_locality import attention_shares  # noqa: E402

CLS, SEP, PAD = 1, 2, 0


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    # two sequences: 6 real tokens, and 4 real tokens then 2 of padding
    ids = torch.tensor([[CLS, 5, 6, 7, 8, SEP], [CLS, 5, 6, SEP, PAD, PAD]])
    return ids, (ids != PAD).long()


def test_a_previous_token_head_and_a_uniform_head() -> None:
    ids, mask = batch()
    b, t = ids.shape
    previous = torch.zeros(b, 1, t, t)
    for i in range(t):
        previous[:, 0, i, max(i - 1, 0)] = 1.0
    uniform = mask[:, None, None, :].float().expand(b, 1, t, t) / mask.sum(-1)[:, None, None, None]
    shares = attention_shares([torch.cat([previous, uniform], 1)], ids, mask, CLS, SEP)
    assert shares.shape == (1, 2, 5)
    prev_head, flat_head = shares[0]
    assert prev_head[0] == pytest.approx(1.0)  # every query with a real previous token reads it
    assert prev_head[1] == pytest.approx(0.0)
    # the uniform head gives each neighbour exactly the uniform share of its sequence
    expected = (6 * (1 / 6) + 4 * (1 / 4)) / 10  # mean of 1/length over the 10 real queries
    assert flat_head[4] == pytest.approx(expected)
    assert flat_head[0] == pytest.approx((5 / 6 + 3 / 4) / 8)  # over the 8 real (t-1, t) pairs
    assert flat_head[2] == pytest.approx(expected)  # one [CLS] per sequence
    assert flat_head[3] == pytest.approx(expected)  # one [SEP]


def test_padding_never_counts_as_a_neighbour() -> None:
    ids, mask = batch()
    b, t = ids.shape
    to_padding = torch.zeros(b, 1, t, t)
    to_padding[1, 0, :, 4] = 1.0  # the second sequence's queries all look at a padded slot
    to_padding[0, 0, :, 0] = 1.0  # the first's at [CLS]
    shares = attention_shares([to_padding], ids, mask, CLS, SEP)[0, 0]
    # the second sequence's [SEP] -> padded slot 4 would be a "next" read: not a real pair
    assert shares[1] == pytest.approx(0.0)
    assert shares[0] == pytest.approx(1 / 8)  # the first sequence's query 1 -> [CLS]
    assert shares[2] == pytest.approx(6 / 10)  # the first sequence's 6 queries read [CLS]
