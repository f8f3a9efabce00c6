"""Chinese QA metric (CMRC 2018, ``cmrc2018_evaluate.py``): hand-computed EM/F1 cases.

The official script lower-cases, drops punctuation for EM, segments each CJK character as a token
and each run of Latin letters/digits as one, and takes F1 from the longest common substring (LCS)
of the tokens, not from a bag of tokens as SQuAD does. Figures below are worked out by hand.
"""

from __future__ import annotations

import pytest

from training.tasks import qa


@pytest.mark.parametrize(
    ("pred", "golds", "em", "f1"),
    [
        # LCS "北京" or "大学" (2): P 2/4, R 2/5 -> 2PR/(P+R) = 4/9
        ("北京大学", ["北京的大学"], 0.0, 4 / 9),
        # [iphone, 13, 发, 布] vs [iphone, 13, pro, 发, 布]: LCS 2 -> P 1/2, R 2/5 -> 4/9
        # (a bag of tokens would give 4 common: 8/9)
        ("iPhone 13发布", ["iPhone 13 Pro发布"], 0.0, 4 / 9),
        # a digit run is one token: [2018, 年] vs [2019, 年] -> LCS 1 -> 1/2 (by chars: 3/5)
        ("2018年", ["2019年"], 0.0, 0.5),
        # Chinese and ASCII punctuation are dropped for EM and F1
        ("“红楼梦”。", ["红楼梦"], 1.0, 1.0),
        ("（1621年）", ["1621年"], 1.0, 1.0),
        ("北京，大学", ["北京大学"], 1.0, 1.0),
        # [天, 命, 六, 年, 1621, 年] vs [天, 命, 六, 年]: LCS 4 -> P 4/6, R 1 -> 0.8
        ("天命六年(1621年)", ["天命六年"], 0.0, 0.8),
        # lower-cased; surrounding whitespace stripped
        ("HBO East", ["hbo east"], 1.0, 1.0),
        (" 北京 ", ["北京"], 1.0, 1.0),
        # max over the golds: "大学" vs 北京大学 (P 1, R 1/2: 2/3) or 大学城 (P 1, R 2/3: 0.8)
        ("大学", ["北京大学", "大学城"], 0.0, 0.8),
        # no width folding (the script has no NFKC either): full-width NBA is not nba
        ("ＮＢＡ", ["nba"], 0.0, 0.0),
        ("", ["北京"], 0.0, 0.0),
    ],
)
def test_cmrc_em_f1_by_hand(pred: str, golds: list[str], em: float, f1: float) -> None:
    assert qa.exact_match(pred, golds, language="zh") == em
    assert qa.f1_score(pred, golds, language="zh") == pytest.approx(f1)


def test_segmentation_and_normalisation() -> None:
    assert qa.tokens_zh("iPhone 13 Pro发布") == ["iphone", "13", "pro", "发", "布"]
    # punctuation goes before segmenting, so a hyphenated name stays one token (as the script)
    assert qa.tokens_zh("COVID-19疫情") == ["covid19", "疫", "情"]
    assert qa.tokens_zh("《红楼梦》，第1回") == ["红", "楼", "梦", "第", "1", "回"]
    assert qa.normalize_answer_zh("《Arc Hound》") == "archound"
    assert qa.normalize_answer_zh("“克伦特罗”(瘦肉精)。") == "克伦特罗瘦肉精"


def test_deliberate_differences_from_the_script() -> None:
    """Spaces inside an answer and punctuation outside the script's fixed symbol list are
    removed here (the script scores these EM 0); see the qa module docstring."""
    assert qa.exact_match("北京 大学", ["北京大学"], language="zh") == 1.0
    assert qa.exact_match("Getchu.com", ["Getchucom"], language="zh") == 1.0
    assert qa.exact_match("〈生命回响曲〉", ["生命回响曲"], language="zh") == 1.0


def _example(qid: str, context: str, gold: str) -> qa.Example:
    start = context.index(gold)
    return qa.Example(qid, "?", context, [qa.Answer(gold, start)], [gold])


def test_auto_language_is_chosen_per_data_set() -> None:
    """All questions of a data set are scored one way, as by the official scripts: a Latin-only
    answer in CMRC is scored the CMRC way, a CJK answer in an English set the SQuAD way."""
    zh = [
        _example("a", "苹果公司发布了新的手机。", "苹果公司"),
        _example("b", "地震的震级为4.9级，震源深度10公里。", "4.9"),
    ]
    assert qa.data_language(zh) == "zh"
    # "4.9级" vs "4.9": zh tokens [49, 级] vs [49] -> P 1/2, R 1 -> 2/3; the SQuAD way
    # "49级" vs "49" would be one different word each: 0
    metrics = qa.compute_metrics({"a": "苹果公司", "b": "4.9级"}, zh)
    assert metrics["exact"] == pytest.approx(50.0)
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert qa.f1_score("4.9级", ["4.9"]) == 0.0  # per question, "auto" would see English

    en = [
        _example("c", "The capital is 北京 city, in the north.", "北京"),
        _example("d", "Paris is the capital of France.", "Paris"),
        _example("e", "Rome was not built in a day.", "Rome"),
    ]
    assert qa.data_language(en) == "en"
    # SQuAD words [北京, city] vs [北京]: P 1/2, R 1 -> 2/3 (the CMRC way would give 0.8)
    metrics = qa.compute_metrics({"c": "北京 city", "d": "Paris", "e": "Rome"}, en)
    assert metrics["f1"] == pytest.approx(100 * (2 / 3 + 1 + 1) / 3)
    assert qa.data_language(en, "zh") == "zh"
    forced = qa.compute_metrics({"c": "北京 city"}, en[:1], qa.Config(language="zh"))
    assert forced["f1"] == pytest.approx(80.0)
