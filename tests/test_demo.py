"""``make demo``: the embedded task data, and the real build + serve path on a reduced budget."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from training.demo_data import TOPICS, write_docstring_qa, write_topic_classification
from training.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def read_tsv(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel"
    return [tuple(line.split("\t")) for line in lines[1:]]  # type: ignore[misc]


def test_topic_data_has_every_area_and_disjoint_splits(tmp_path: Path) -> None:
    counts = write_topic_classification(tmp_path)
    train, dev = read_tsv(tmp_path / "train.tsv"), read_tsv(tmp_path / "dev.tsv")
    assert counts == {"train": len(train), "dev": len(dev)}
    assert set(Counter(label for _, label in train)) == set(TOPICS)
    assert {label for _, label in dev} <= set(TOPICS)
    assert not {s for s, _ in train} & {s for s, _ in dev}
    assert 0.05 < len(dev) / (len(train) + len(dev)) < 0.15
    assert all(len(s.split()) >= 6 and "\t" not in s and "\n" not in s for s, _ in train)


def test_docstring_qa_answers_sit_at_their_offsets(tmp_path: Path) -> None:
    counts = write_docstring_qa(tmp_path)
    parts = {p: json.loads((tmp_path / f"{p}.json").read_text())["data"] for p in counts}
    modules = {p: {a["title"].split(".")[0] for a in arts} for p, arts in parts.items()}
    assert not modules["train"] & modules["dev"], "a module is on both sides"
    kinds: Counter[str] = Counter()
    for articles in parts.values():
        for par in (p for a in articles for p in a["paragraphs"]):
            ctx = par["context"]
            assert ctx.count("(): ") >= 2
            for qa in par["qas"]:
                (answer,) = qa["answers"]
                start = answer["answer_start"]
                assert ctx[start : start + len(answer["text"])] == answer["text"]
                kind = qa["id"].rsplit(":", 1)[1]
                kinds[kind] += 1
                if kind == "which":  # the answer is a function name listed in the context
                    assert ctx[start + len(answer["text"]) :].startswith("(): ")
                else:
                    assert ctx[:start].endswith(("Return ", "Returns "))
    assert kinds["what"] == kinds["which"] == (counts["train"] + counts["dev"]) // 2
    assert counts["dev"] > 50


def test_real_data_recipe_names_what_is_missing(tmp_path: Path, data_dir: Path) -> None:
    from training.demo import real_recipe

    recipe = real_recipe(data_dir)
    assert all(Path(p).exists() for p in [*recipe.corpus, *recipe.classification, *recipe.qa])
    assert "--article-split" in recipe.qa_args and recipe.corpus_args == ["--strip-gutenberg"]
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError, match=r"lacks: corpus .*sst2 dev .*squad"):
        real_recipe(tmp_path)


def test_chinese_recipe_and_its_usage_errors(tmp_path: Path, data_dir: Path) -> None:
    from training.demo import real_recipe_zh

    recipe = real_recipe_zh(data_dir)
    assert (
        recipe.token_classification is not None and "--holdout" in recipe.token_classification_args
    )
    files = [*recipe.corpus, *recipe.classification, *recipe.qa, *recipe.token_classification]
    assert all(Path(p).exists() for p in files)
    with pytest.raises(DataError, match=r"lacks: classics .*msra train"):
        real_recipe_zh(tmp_path)
    argv = [sys.executable, "-m", "training", "demo", "--language", "zh", "--no-serve"]
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--language zh needs --data-dir" in r.stderr


def test_demo_budgets_pretraining_by_time_and_groups_fine_tuning_by_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands the demo runs: pretraining stops at the wall-time budget or the steps,
    whichever ends first (--pretrain-minutes 0: steps only), fine-tuning batches by length."""
    from training import demo

    ran: list[list[str]] = []
    monkeypatch.setattr(demo, "command", lambda argv, check=True: ran.append(argv) or 0)
    monkeypatch.setattr(demo, "export", lambda *a, **k: None)
    for minutes, expected in ((None, ["--max-minutes", "9.5"]), (0.0, [])):
        ran.clear()
        conf = demo.DemoConfig(out=str(tmp_path / "work"), models=str(tmp_path / "m"))
        conf.limit_modules = 8
        if minutes is not None:
            conf.pretrain_minutes = minutes
        demo.build(conf)
        by_command = {argv[0]: argv for argv in ran}
        pretrain = by_command["pretrain"]
        given = (
            pretrain[pretrain.index("--max-minutes") :][:2] if "--max-minutes" in pretrain else []
        )
        assert given == expected
        tuned = [argv for argv in ran if argv[0] == "finetune"]
        assert len(tuned) == 2 and all("--group-by-length" in argv for argv in tuned)
    argv = [sys.executable, "-m", "training", "demo", "--pretrain-minutes", "-1", "--no-serve"]
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--pretrain-minutes cannot be negative" in r.stderr


def chinese_slice(data_dir: Path, out: Path) -> Path:
    """The head of every Chinese data file, in the shared layout (the real data, less of it)."""
    src, dst = data_dir / "chinese", out / "chinese"

    def head(rel: str, lines: int, blank_lines: int | None = None) -> None:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        kept, blanks = [], 0
        with (src / rel).open(encoding="utf-8", newline="") as f:
            for line in f:
                kept.append(line)
                blanks += not line.strip()
                if len(kept) >= lines or (blank_lines is not None and blanks >= blank_lines):
                    break
        target.write_text("".join(kept), encoding="utf-8", newline="")

    corpus = "pretrain-corpus-zh/"
    head(corpus + "classics/三国演义.txt", 400)
    head(corpus + "zhwiki/AA/wiki_00", 200)
    head(corpus + "cluecorpussmall-sample/CLUECorpusSmall_sampled.txt", 200)
    head("chnsenticorp/train.tsv", 300)
    head("chnsenticorp/dev.tsv", 60)
    head("msra-ner/train.txt", 10**6, blank_lines=300)
    for part, articles in (("train", 4), ("dev", 2)):
        name = f"cmrc2018/cmrc2018_{part}.json"
        data = json.loads((src / name).read_text(encoding="utf-8"))
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        sliced = {**data, "data": data["data"][:articles]}
        (dst / name).write_text(json.dumps(sliced, ensure_ascii=False), encoding="utf-8")
    return out


@pytest.mark.slow
def test_chinese_models_build_and_serve_every_task(tmp_path: Path, data_dir: Path) -> None:
    """`make models-zh` on a reduced budget: the real Chinese data through tokenizer,
    pretraining, three fine-tunings and four exports, then served with exact offsets."""
    from tests.app.live import serve

    small = chinese_slice(data_dir, tmp_path / "data")
    models = tmp_path / "models"
    argv = [sys.executable, "-m", "training", "demo", "--data-dir", str(small),
            "--language", "zh", "--out", str(tmp_path / "work"), "--models", str(models),
            "--no-serve", "--preset", "tiny", "--vocab-size", "6000", "--max-steps", "10",
            "--classifier-steps", "10", "--qa-steps", "10", "--variants", "fp32"]  # fmt: skip
    env = {**os.environ, "TQDM_DISABLE": "1"}
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the Chinese recipe pretrains with a fading locality bias (its neighbour heads need it)
    run_config = json.loads((tmp_path / "work" / "pretrained" / "run_config.json").read_text())
    assert run_config["locality_bias"] == 2.0
    names = {"zh-fill-mask", "chnsenticorp-classifier", "cmrc2018-qa", "msra-ner"}
    assert {p.name for p in models.iterdir()} == names
    ner = json.loads((models / "msra-ner" / "manifest.json").read_text())
    assert {"B-PER", "I-LOC", "B-ORG"} <= set(ner["labels"])
    with serve(models, variant="fp32") as live:
        text = "张三昨天在北京大学见到了李四。"
        r2 = live.post("/v1/token-classify", {"model": "msra-ner", "inputs": text})
        assert r2.status_code == 200, r2.text
        for e in r2.json()["results"][0]["entities"]:
            assert text[e["start"] : e["end"]] == e["text"]
        context = "长江全长约6300公里，最后在上海注入东海。"
        body = {"model": "cmrc2018-qa", "question": "长江在哪里注入东海？", "context": context}
        best = live.post("/v1/qa", body).json()["results"][0]["answers"][0]
        assert context[best["start"] : best["end"]] == best["text"]
        r3 = live.post("/v1/classify", {"model": "chnsenticorp-classifier", "inputs": "很好"})
        assert {x["label"] for x in r3.json()["results"][0]["labels"]} == {"negative", "positive"}
        r4 = live.post(
            "/v1/fill-mask", {"model": "zh-fill-mask", "inputs": "北京是中国的[MASK]都。"}
        )
        assert r4.json()["results"][0]["masks"][0]["start"] == 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text(encoding="utf-8", errors="replace")
        if re.search(pattern, text):
            return text
        if proc.poll() is not None:
            pytest.fail(f"demo exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"no {pattern!r} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_demo_builds_three_bundles_serves_them_and_reuses_them(tmp_path: Path) -> None:
    """The real command, reduced budget: embedded data -> tokenizer -> pretraining -> two
    fine-tunings -> three exports -> `python -m app`, answering on every endpoint."""
    port, models = free_port(), tmp_path / "models"
    argv = [sys.executable, "-m", "training", "demo", "--out", str(tmp_path / "work"),
            "--models", str(models), "--limit-modules", "60", "--preset", "tiny",
            "--vocab-size", "2000", "--max-steps", "20", "--classifier-steps", "20",
            "--qa-steps", "20", "--port", str(port)]  # fmt: skip
    env = {**os.environ, "TQDM_DISABLE": "1", "BERT_INTRA_OP_THREADS": "1"}
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        text = wait_for(log, r"Ctrl-C stops it", proc, timeout=600)
        base = f"http://127.0.0.1:{port}"
        # the demo printed its own example answers and the curl calls
        assert "classification:" in text and "question answering" in text
        assert f"curl -s {base}/v1/qa" in text
        with httpx.Client(base_url=base, timeout=30) as client:
            listed = client.get("/v1/models").json()["models"]
            tasks = {m["name"]: m["task"] for m in listed}
            assert tasks == {
                "demo-fill-mask": "fill-mask",
                "demo-topics": "classification",
                "demo-qa": "qa",
            }
            topics = next(m for m in listed if m["name"] == "demo-topics")
            assert set(topics["labels"]) <= set(TOPICS) and len(topics["labels"]) >= 4
            body = {"inputs": "Return the [MASK] value.", "top_k": 3}
            r = client.post("/v1/fill-mask", json=body)
            (mask,) = r.json()["results"][0]["masks"]
            scores = [t["score"] for t in mask["tokens"]]
            assert len(scores) == 3 and scores == sorted(scores, reverse=True)
            r = client.post("/v1/classify", json={"inputs": ["Open a socket to the host."]})
            labels = r.json()["results"][0]["labels"]
            assert labels[0]["label"] in topics["labels"]
            assert sum(x["score"] for x in labels) == pytest.approx(1.0, abs=1e-3)
            context = "close(): Return None after closing. size(): Return the number of bytes."
            body = {"question": "What does size return?", "context": context}
            r = client.post("/v1/qa", json=body)
            best = r.json()["results"][0]["answers"][0]
            assert context[best["start"] : best["end"]] == best["text"] and best["text"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
    for name in ("demo-fill-mask", "demo-topics", "demo-qa"):
        manifest = json.loads((models / name / "manifest.json").read_text())
        assert "fp32" in manifest["variants"]  # int8 too unless its parity gate refused it
        assert manifest["evaluation"], "the fine-tuning figures travel into the bundle"
    # a second run reuses every stage and builds nothing
    again = subprocess.run(
        [*argv, "--no-serve"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120
    )
    assert again.returncode == 0, again.stderr[-2000:]
    stages = [ln for ln in again.stdout.splitlines() if ln.startswith("==> ")]
    assert len(stages) == 8 and all(s.endswith("(done, reusing)") for s in stages), stages
    assert "$ python -m training" not in again.stdout
