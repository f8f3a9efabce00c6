"""The count-based cloze reference of benchmarks/cloze_ngram.py on streams with known answers."""

from __future__ import annotations

import numpy as np

from benchmarks.cloze_ngram import cloze_accuracy


def test_local_context_decides_a_periodic_stream() -> None:
    stream = np.tile(np.array([5, 6, 7, 8, 6, 9], dtype=np.int64), 200)
    figures = cloze_accuracy(stream, stream[:300], vocab=10, samples=200, seed=0)
    assert figures["left_right_acc"] == 1.0 and figures["left_right_coverage"] == 1.0
    # after 6 comes 7 or 9 alike, so the left neighbour alone gets those positions half right
    assert 0.7 < figures["left_acc"] < 1.0
    assert figures["unigram_acc"] < 0.5  # 6 is a third of the tokens


def test_unseen_pairs_back_off_to_the_left_neighbour_then_the_unigram() -> None:
    train = np.array([1, 2, 3] * 50, dtype=np.int64)
    heldout = np.array([4, 2, 4] * 20, dtype=np.int64)  # pairs never seen in training
    figures = cloze_accuracy(train, heldout, vocab=5, samples=50, seed=0)
    assert figures["left_right_coverage"] == 0.0
    assert figures["left_right_acc"] == figures["left_acc"]
