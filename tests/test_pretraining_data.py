"""BERT instance creation and masking, checked against the recipe's statistics on real text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.corpus import CorpusConfig
from training.pretraining_data import (
    MaskingConfig,
    PretrainingDataset,
    build_token_store,
    continuation_mask,
    create_instances,
    open_store,
    truncated_lengths,
)
from training.tokenizer import load


def reference_truncation(len_a: int, len_b: int, max_total: int) -> tuple[int, int]:
    """google-research/bert truncate_seq_pair, counting removals."""
    a, b, cut_a, cut_b = len_a, len_b, 0, 0
    while a + b > max_total:
        if a > b:
            a, cut_a = a - 1, cut_a + 1
        else:
            b, cut_b = b - 1, cut_b + 1
    return cut_a, cut_b


def test_truncation_closed_form_equals_reference_loop() -> None:
    for la in range(0, 40):
        for lb in range(0, 40):
            for total in (5, 17, 30):
                assert truncated_lengths(la, lb, total) == reference_truncation(la, lb, total)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_tokenizer: Path, embedded_corpus: Path):
    out = tmp_path_factory.mktemp("store") / "data"
    tok = load(small_tokenizer)
    build_token_store(
        CorpusConfig(corpus=[str(embedded_corpus)]), tok, out, holdout_fraction=0.1, seed=0, key="k"
    )
    return tok, out


def make_dataset(tok, split, conf: MaskingConfig, seed: int = 0) -> PretrainingDataset:
    vocab = tok.get_vocab()
    return PretrainingDataset(
        split,
        conf,
        seed=seed,
        cls_id=vocab["[CLS]"],
        sep_id=vocab["[SEP]"],
        mask_id=vocab["[MASK]"],
        pad_id=vocab["[PAD]"],
        vocab_size=tok.get_vocab_size(),
        special_ids=range(5),
        continuation=continuation_mask(tok),
    )


def test_store_is_memory_mapped_and_split_by_group(store) -> None:
    _, folder = store
    meta, splits = open_store(folder)
    assert isinstance(splits["train"].tokens, np.memmap)
    assert meta["splits"]["heldout"]["documents"] > 0
    assert meta["splits"]["train"]["documents"] > 5 * meta["splits"]["heldout"]["documents"]
    # offsets are consistent: sentences tile the token array, documents tile the sentences
    s = splits["train"]
    assert s.sentences[0] == 0 and s.sentences[-1] == len(s.tokens)
    assert s.documents[-1] == len(s.sentences) - 1
    assert (np.diff(s.sentences) > 0).all()


def test_store_is_reused_when_key_matches(store, embedded_corpus: Path) -> None:
    tok, folder = store
    before = (folder / "meta.json").stat().st_mtime_ns
    build_token_store(CorpusConfig(corpus=[str(embedded_corpus)]), tok, folder, key="k")
    assert (folder / "meta.json").stat().st_mtime_ns == before


def test_instances_follow_the_recipe(store) -> None:
    _, folder = store
    _, splits = open_store(folder)
    conf = MaskingConfig(max_seq_len=64, short_seq_prob=0.1)
    inst = create_instances(splits["train"], conf, np.random.default_rng(0))
    lengths = (inst[:, 1] - inst[:, 0]) + (inst[:, 3] - inst[:, 2])
    assert lengths.max() <= 64 - 3
    assert (inst[:, 1] > inst[:, 0]).all()
    random_next = inst[:, 4].mean()
    assert 0.4 < random_next < 0.65  # 50 % random B, plus single-sentence chunks
    # most instances fill the target; short_seq_prob adds deliberately shorter ones
    full = np.random.default_rng(0)
    no_short = create_instances(
        splits["train"], MaskingConfig(max_seq_len=64, short_seq_prob=0), full
    )
    no_short_len = (no_short[:, 1] - no_short[:, 0]) + (no_short[:, 3] - no_short[:, 2])
    assert (lengths == 61).mean() > 0.8
    assert (lengths < 61).mean() > (no_short_len < 61).mean() + 0.02
    # a true-next B starts exactly where A ends
    nxt = inst[inst[:, 4] == 0]
    assert ((nxt[:, 2] - nxt[:, 1]) >= 0).all()


def test_masking_statistics_on_real_text(store) -> None:
    tok, folder = store
    _, splits = open_store(folder)
    conf = MaskingConfig(max_seq_len=128, max_predictions_per_seq=20)
    ds = make_dataset(tok, splits["train"], conf)
    n = min(400, ds.epoch_size(0))
    batch = ds.batch(0, range(n))
    weights = batch["masked_lm_weights"] > 0
    lengths = batch["attention_mask"].sum(1)
    predicted = weights.sum(1)
    expected = np.minimum(20, np.maximum(1, np.round(lengths * 0.15)))
    assert (predicted == expected).all()
    rows, cols = np.nonzero(weights)
    pos = batch["masked_lm_positions"][rows, cols]
    shown = batch["input_ids"][rows, pos]
    original = batch["masked_lm_ids"][rows, cols]
    is_mask = shown == 3 + 1  # [MASK] id 4
    kept = (shown == original) & ~is_mask
    total = len(shown)
    assert abs(is_mask.mean() - 0.8) < 0.03
    assert abs(kept.mean() - 0.1) < 0.025  # includes random draws equal to the original (rare)
    assert abs((~is_mask & ~kept).mean() - 0.1) < 0.025
    assert total > 3000
    # [CLS] and [SEP] are never predicted, padding never
    assert not np.isin(original, [2, 3, 0]).any()


def test_whole_word_masking_masks_all_pieces(store) -> None:
    tok, folder = store
    _, splits = open_store(folder)
    cont = continuation_mask(tok)
    ds = make_dataset(tok, splits["train"], MaskingConfig(max_seq_len=128, whole_word_masking=True))
    for i in range(100):
        ex = ds.example(0, i)
        ids = ex["input_ids"].copy()
        ids[ex["masked_lm_positions"]] = ex["masked_lm_ids"]  # the original sequence
        chosen = set(ex["masked_lm_positions"].tolist())
        for p in chosen:  # a chosen continuation piece implies its whole word was chosen
            if cont[ids[p]] and ids[p - 1] not in (2, 3):  # words never span [CLS]/[SEP]
                assert p - 1 in chosen
            if p + 1 < len(ids) and cont[ids[p + 1]]:
                assert p + 1 in chosen


def test_masks_are_dynamic_and_reproducible(store) -> None:
    tok, folder = store
    _, splits = open_store(folder)
    conf = MaskingConfig(max_seq_len=64)
    a = make_dataset(tok, splits["train"], conf)
    b = make_dataset(tok, splits["train"], conf)
    e0 = a.batch(0, range(32))
    assert all((e0[k] == b.batch(0, range(32))[k]).all() for k in e0)  # same seed, same data
    e1 = a.batch(1, range(32))
    assert not (
        e0["input_ids"].shape == e1["input_ids"].shape
        and (e0["input_ids"] == e1["input_ids"]).all()
    )  # new epoch, new pairs and masks


def test_gutenberg_holdout_is_by_title(
    data_dir: Path, small_tokenizer: Path, tmp_path: Path
) -> None:
    """Eight files of 'A Tramp Abroad' land in one split: no edition leaks across."""
    books = data_dir / "gutenberg_english_subset" / "books" / "Twain, Mark"
    tramp = sorted(p for p in books.glob("*.txt") if "Tramp Abroad" in p.name)
    assert len(tramp) >= 2
    from training.corpus import iter_documents

    groups = {
        d.group
        for d in iter_documents(CorpusConfig(corpus=[str(p) for p in tramp], strip_gutenberg=True))
    }
    assert groups == {"a tramp abroad"}
