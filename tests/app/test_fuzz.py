"""Fuzzing the real server: request bodies generated from the committed OpenAPI schema, and a
catalogue of nasty inputs, each with its expected outcome.

(a) For every POST /v1/* endpoint, hypothesis draws bodies of four kinds: *valid* (built to the
    documented schema, checked against it with jsonschema, and sensible: known model, non-blank
    short texts, a mask where one is needed; the answer must be 200), *schema* (anything the
    schema allows, with any model name, blank texts, any integers in range), *wrong* (an unknown
    field, a missing field, a field replaced by arbitrary JSON, any JSON document, raw bytes) and
    checks the contract: never a 5xx; every error has the common body; every 200 has `model`,
    `results` and `usage` with one result per input, plus per-task invariants (QA answers are the
    context at their offsets, one prediction list per mask, softmax scores sum to 1, ...).
(b) A catalogue of nasty inputs (huge, empty, invalid UTF-8, surrogates, NUL, RTL, emoji,
    Chinese, duplicate keys, many masks, odd top_k ...), each with its exact expected outcome.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.app.conftest import KINDS
from tests.app.live import Live, error_of, serve
from tests.helpers import WORDS

REPO = Path(__file__).resolve().parents[2]
SPEC: dict[str, Any] = json.loads((REPO / "openapi.json").read_text(encoding="utf-8"))
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]
# Every POST endpoint under /v1 and the name of its request schema, as documented.
ENDPOINTS: dict[str, str] = {
    path: ops["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit(
        "/", 1
    )[1]
    for path, ops in SPEC["paths"].items()
    if path.startswith("/v1/") and "post" in ops
}
# The bundles (see conftest.KINDS) that answer each endpoint.
MODELS_OF: dict[str, tuple[str, ...]] = {
    "/v1/classify": ("classification", "multi-label"),
    "/v1/qa": ("qa",),
    "/v1/fill-mask": ("fill-mask",),
    "/v1/token-classify": ("token-classification",),
    "/v1/summarize": ("summarization",),
    "/v1/translate": ("translation",),
    "/v1/tokenize": (*KINDS, "translation"),
}
MAX_INPUTS = 8  # the `limited` server's max_inputs_per_request
MAX_LENGTH = 64  # the tiny bundles' max sequence length (tests.helpers.build_checkpoint)
FILL_MASK_TOP_K = 10  # candidates per mask the tiny fill-mask bundle gives
EXAMPLES: Counter[str] = Counter()  # fuzz examples run, by "endpoint kind" (reported by -s)
JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def served(bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared bundles plus a translation bundle ("translation"; built here, so the shared
    `bundles` fixture and the tests over it are unchanged)."""
    import shutil

    from tests.helpers import build_translation_checkpoint, export

    root = tmp_path_factory.mktemp("fuzz")
    models = root / "models"
    shutil.copytree(bundles, models)
    ckpt = build_translation_checkpoint(root / "ckpt", steps=10)
    args = ["--checkpoint", ckpt, "--out", models / "translation", "--max-steps", "4"]
    assert export(*args, "--variants", "fp32") == 0
    return models


@pytest.fixture(scope="module")
def limited(served: Path) -> Iterator[Live]:
    """Every bundle (fp32), at most 8 inputs per request, bodies up to 4 KiB, queue of 16."""
    with serve(
        served, variant="fp32", max_inputs_per_request=MAX_INPUTS, max_body_bytes=4096,
        queue_size=16, max_batch_size=4,
    ) as live:  # fmt: skip
        yield live


@pytest.fixture(scope="module")
def roomy(served: Path) -> Iterator[Live]:
    """Every bundle (fp32), bodies up to 2 MiB, the default 256 inputs per request."""
    with serve(served, variant="fp32", max_body_bytes=2 * 1024 * 1024) as live:
        yield live


# ---------------------------------------------------------------------------- contract checks


def check_error(r: httpx.Response) -> dict[str, Any]:
    """The common error body, whatever its status and type."""
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), r.text
    return error_of(r, r.status_code, body["error"].get("type"))


def count_inputs(path: str, body: dict[str, Any]) -> int:
    if path == "/v1/qa":
        return len(body["inputs"]) if body.get("inputs") is not None else 1
    return 1 if isinstance(body["inputs"], str) else len(body["inputs"])


def texts_of(body: dict[str, Any]) -> list[Any]:
    inputs = body["inputs"]
    return [inputs] if isinstance(inputs, str) else list(inputs)


def check_ok(path: str, body: dict[str, Any], r: httpx.Response) -> dict[str, Any]:
    """A 200 answer: the common frame, one result per input, and the task's invariants."""
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert set(out) == {"model", "results", "usage"}, out
    n = count_inputs(path, body)
    assert len(out["results"]) == n and out["usage"]["inputs"] == n
    assert out["model"] in MODELS_OF[path]
    if body.get("model") is not None:
        assert out["model"] == body["model"]
    assert isinstance(out["usage"]["tokens"], int) and out["usage"]["tokens"] >= 2 * n
    check_task(path, body, out)
    return out


def descending(scores: list[float]) -> bool:
    return all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


def check_task(path: str, body: dict[str, Any], out: dict[str, Any]) -> None:
    results = out["results"]
    if path == "/v1/classify":
        n_labels = 2 if out["model"] == "classification" else 3
        top_k = body.get("top_k")
        for res in results:
            scores = [label["score"] for label in res["labels"]]
            assert len(scores) == (n_labels if top_k is None else min(top_k, n_labels))
            assert descending(scores), res
            if out["model"] == "classification" and len(scores) == n_labels:
                assert math.isclose(sum(scores), 1.0, abs_tol=1e-5), res  # softmax
    elif path == "/v1/qa":
        pairs = body.get("inputs") or [{"question": body["question"], "context": body["context"]}]
        for pair, res in zip(pairs, results, strict=True):
            context = pair["context"]
            assert res["windows"] >= 1 and len(res["answers"]) <= body.get("top_k", 1)
            if res["no_answer"]:
                assert res["answers"] == []
            assert descending([a["score"] for a in res["answers"]]), res
            for a in res["answers"]:
                assert 0 <= a["start"] < a["end"] <= len(context), (a, context)
                assert context[a["start"] : a["end"]] == a["text"], (a, context)
    elif path == "/v1/fill-mask":
        top_k = body.get("top_k", 5)
        for text, res in zip(texts_of(body), results, strict=True):
            assert 1 <= len(res["masks"]) <= text.count("[MASK]"), (text, res)
            for m in res["masks"]:
                assert text[m["start"] : m["end"]] == "[MASK]", (text, m)
                assert len(m["tokens"]) == top_k
                assert descending([t["score"] for t in m["tokens"]]), m
    elif path == "/v1/token-classify":
        for text, res in zip(texts_of(body), results, strict=True):
            for e in res["entities"]:
                assert text[e["start"] : e["end"]] == e["text"] and 0 <= e["score"] <= 1, e
    elif path == "/v1/summarize":
        most = body.get("max_sentences", 3)
        for text, res in zip(texts_of(body), results, strict=True):
            chosen = res["sentences"]
            assert 1 <= len(chosen) <= most, (text, res)
            assert [c["start"] for c in chosen] == sorted(c["start"] for c in chosen)  # in order
            for c in chosen:
                assert text[c["start"] : c["end"]] == c["text"] and c["text"].strip(), c
            assert res["summary"] == "\n".join(c["text"] for c in chosen)
    elif path == "/v1/translate":
        most = body.get("max_new_tokens") or 12  # the tiny bundle's default
        for res in results:
            assert isinstance(res["translation"], str) and 0 <= res["tokens"] <= most, res
    elif path == "/v1/tokenize":
        for given_input, res in zip(texts_of(body), results, strict=True):
            parts = [given_input] if isinstance(given_input, str) else list(given_input)
            tokens = res["tokens"]
            assert tokens[0]["special"] and tokens[-1]["special"]  # [CLS] ... [SEP]
            for t in tokens:
                assert 0 <= t["start"] <= t["end"] <= len(parts[t["type_id"]]), (t, parts)


def post_raw(live: Live, path: str, raw: bytes) -> httpx.Response:
    return live.client.post(path, content=raw, headers=JSON_HEADERS)


# ------------------------------------------------------------------ strategies from the schema

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
# Short non-blank texts: vocabulary sentences, or any Unicode (control chars, RTL, emoji, CJK).
short_unicode = st.text(min_size=1, max_size=12).filter(lambda t: bool(t.strip()))
text = st.one_of(words, short_unicode)
# Text that surely gives a token (a letter or digit): QA contexts and documents to summarise.
# A context or document of control characters only holds nothing to read: a 422, not a 200.
readable = text.filter(lambda t: any(c.isalnum() for c in t))
NASTY = ["", " ", "\t\n", "\u0000", "[MASK]", "[CLS] [SEP] [PAD] [UNK]", "e\u0301", "שלום", "猫"]
any_text = st.one_of(text, st.sampled_from(NASTY), st.text(max_size=20))


def with_masks(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`base` texts with 1-3 masks inserted at word boundaries."""

    def insert(parts: list[str], spots: list[int]) -> str:
        for spot in sorted(spots, reverse=True):
            parts.insert(spot % (len(parts) + 1), "[MASK]")
        return " ".join(parts)

    return st.builds(
        insert,
        base.map(lambda t: t.split(" ")),
        st.lists(st.integers(0, 20), min_size=1, max_size=3),
    )


any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def from_schema(schema: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Anything the JSON schema allows (`name`: the property being drawn, for model names and
    texts); lists are kept short so most bodies stay under the 4 KiB limit."""
    if "$ref" in schema:
        return from_schema(SCHEMAS[schema["$ref"].rsplit("/", 1)[1]], name)
    if "anyOf" in schema:
        return st.one_of(*(from_schema(s, name) for s in schema["anyOf"]))
    kind = schema.get("type")
    if kind == "object":
        props = {k: from_schema(v, k) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if kind == "array":
        if "prefixItems" in schema:
            return st.tuples(*(from_schema(s, name) for s in schema["prefixItems"])).map(list)
        return st.lists(
            from_schema(schema["items"], name),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", MAX_INPUTS + 2), MAX_INPUTS + 2),
        )
    if kind == "string":
        if name == "model":
            return st.sampled_from([*KINDS, "nope"]) | st.text(max_size=8)
        return any_text.filter(lambda t: len(t) >= schema.get("minLength", 0))
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.integers(
            None if lo is None else int(lo), None if hi is None else int(hi)
        ) | st.integers(-3, 12)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    raise AssertionError(f"schema construct not handled: {schema}")


def valid(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies the server must answer with 200 (short texts: nothing is cut or refused)."""
    names = MODELS_OF[path]
    several = len(names) > 1
    model = st.sampled_from(names)
    model_field = {"model": model} if several else {}
    model_opt = {} if several else {"model": model}
    texts = st.one_of(text, st.lists(text, min_size=1, max_size=MAX_INPUTS))
    pairs = st.lists(st.tuples(text, text).map(list), min_size=1, max_size=MAX_INPUTS)
    if path == "/v1/classify":
        return st.fixed_dictionaries(
            {**model_field, "inputs": texts | pairs},
            optional={"top_k": st.none() | st.integers(1, 10**6), "truncate": st.booleans()},
        )
    if path == "/v1/qa":
        pair = st.fixed_dictionaries({"question": text, "context": readable})
        options = {
            **model_opt,
            "top_k": st.integers(1, 20),
            "max_answer_length": st.integers(1, 512),
            "allow_no_answer": st.booleans(),
        }
        single = st.fixed_dictionaries({"question": text, "context": readable}, optional=options)
        many = st.fixed_dictionaries(
            {"inputs": st.lists(pair, min_size=1, max_size=MAX_INPUTS)}, optional=options
        )
        return single | many
    if path == "/v1/fill-mask":
        masked = with_masks(text)
        return st.fixed_dictionaries(
            {"inputs": masked | st.lists(masked, min_size=1, max_size=MAX_INPUTS)},
            optional={
                **model_opt,
                "top_k": st.integers(1, FILL_MASK_TOP_K),
                "truncate": st.booleans(),
            },
        )
    if path == "/v1/token-classify":
        return st.fixed_dictionaries(
            {"inputs": texts}, optional={**model_opt, "truncate": st.booleans()}
        )
    if path == "/v1/summarize":
        documents = st.one_of(readable, st.lists(readable, min_size=1, max_size=MAX_INPUTS))
        return st.fixed_dictionaries(
            {"inputs": documents},
            optional={**model_opt, "max_sentences": st.integers(1, 64), "truncate": st.booleans()},
        )
    if path == "/v1/translate":
        return st.fixed_dictionaries(
            {"inputs": texts},
            optional={
                **model_opt,
                "beam_size": st.none() | st.integers(1, 4),
                "max_new_tokens": st.none() | st.integers(1, 12),
                "truncate": st.booleans(),
            },
        )
    assert path == "/v1/tokenize"
    return st.fixed_dictionaries({**model_field, "inputs": texts | pairs})


def wrong(path: str) -> st.SearchStrategy[tuple[str, Any]]:
    """(how it is wrong, body): bodies the schema refuses or that are not request bodies."""
    props = set(SCHEMAS[ENDPOINTS[path]]["properties"])
    field = st.text(min_size=1, max_size=8).filter(lambda k: k not in props)

    def extra(body: dict[str, Any], key: str, value: Any) -> tuple[str, Any]:
        return "extra", {**body, key: value}

    def missing(body: dict[str, Any]) -> tuple[str, Any]:
        drop = "context" if "context" in body else "inputs"
        return "missing", {k: v for k, v in body.items() if k != drop}

    def replaced(body: dict[str, Any], pick: int, value: Any) -> tuple[str, Any]:
        key = sorted(body)[pick % len(body)]
        return "replaced", {**body, key: value}

    return st.one_of(
        st.builds(extra, valid(path), field, any_json),
        valid(path).map(missing),
        st.builds(replaced, valid(path), st.integers(0, 10), any_json),
        any_json.map(lambda doc: ("document", doc)),
        st.binary(max_size=64).map(lambda raw: ("bytes", raw)),
    )


def cases(path: str) -> st.SearchStrategy[tuple[str, Any, bool]]:
    """(kind, body, ensure_ascii): a third valid, a third schema-shaped, a third wrong; body is
    JSON-able, or raw bytes for kind "bytes"."""
    schema = {"$ref": f"#/components/schemas/{ENDPOINTS[path]}"}
    buckets: list[st.SearchStrategy[tuple[str, Any]]] = [
        valid(path).map(lambda b: ("valid", b)),
        from_schema(schema).map(lambda b: ("schema", b)),
        wrong(path),
    ]
    return st.tuples(st.integers(0, 2).flatmap(buckets.__getitem__), st.booleans()).map(
        lambda t: (*t[0], t[1])
    )


def conforms(path: str, body: Any) -> bool:
    schema = {"$ref": f"#/components/schemas/{ENDPOINTS[path]}", "components": SPEC["components"]}
    return jsonschema.Draft202012Validator(schema).is_valid(body)


# ---------------------------------------------------------------------------------- (a) fuzzing


def test_the_fuzzed_endpoints_are_the_documented_ones() -> None:
    assert set(ENDPOINTS) == set(MODELS_OF)


@pytest.mark.parametrize("path", sorted(MODELS_OF))
def test_fuzzed_bodies_keep_the_contract(limited: Live, path: str) -> None:
    seen: Counter[str] = Counter()

    @settings(
        max_examples=60,
        deadline=None,
        database=None,  # no .hypothesis folder in the repository
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(case=cases(path))
    def run(case: tuple[str, Any, bool]) -> None:
        kind, body, ascii_only = case
        seen[kind] += 1
        if kind == "bytes":
            raw = body
        else:
            raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        r = post_raw(limited, path, raw)
        # A deadline the body asked for (timeout_ms: 1) may pass: 504, never another 5xx.
        asked = isinstance(body, dict) and isinstance(body.get("timeout_ms"), int)
        assert r.status_code < 500 or (asked and r.status_code == 504), (kind, body, r.text)
        if kind == "valid":
            assert conforms(path, body), body  # the generator follows the documented schema
            check_ok(path, body, r)
        elif r.status_code == 200:
            check_ok(path, body, r)
        else:
            err = check_error(r)
            if kind in ("extra", "missing"):
                assert r.status_code in (413, 422), (kind, body, err)
            if kind == "document" and not isinstance(body, dict):
                assert r.status_code == 422, (body, err)
            if r.status_code == 413:
                assert err["type"] == "payload_too_large", err

    run()
    EXAMPLES.update({f"{path} {kind}": n for kind, n in seen.items()})
    print(f"\n{path}: {sum(seen.values())} fuzz examples {dict(seen)}")
    assert seen["valid"] > 0 and sum(seen.values()) >= 30


# ------------------------------------------------------------------------ (b) nasty inputs

MIB_TEXT = "the cat sat on the mat " * (1024 * 1024 // 23)  # ~1 MB of vocabulary words
RTL = "مرحبا بالعالم שלום עולם"
COMBINING = "e\u0301 n\u0303 a\u0308\u0304 z\u0336\u0337"
EMOJI = "😀 the 👨‍👩‍👧 cat 👍🏽"
CHINESE = "猫坐在垫子上。"
Expect = tuple[int, str] | Callable[[dict[str, Any]], None] | None
C = "classification"
INVALID = (422, "validation_error")
UNREADABLE = (400, "bad_request")
TOO_LARGE = (413, "payload_too_large")
NESTED = b'{"model": "classification", "inputs": ' + b"[" * 1500 + b"]" * 1500 + b"}"
HUGE_INT = b'{"inputs": "[MASK]", "top_k": ' + b"1" * 5000 + b"}"


def expect_masks(count: int) -> Callable[[dict[str, Any]], None]:
    def check(out: dict[str, Any]) -> None:
        assert [len(r["masks"]) for r in out["results"]] == [count]

    return check


def expect_labels(count: int) -> Callable[[dict[str, Any]], None]:
    def check(out: dict[str, Any]) -> None:
        assert all(len(r["labels"]) == count for r in out["results"])

    return check


def expect_answer(text: str) -> Callable[[dict[str, Any]], None]:
    def check(out: dict[str, Any]) -> None:
        assert [a["text"] for a in out["results"][0]["answers"]] == [text]

    return check


def expect_inputs(count: int) -> Callable[[dict[str, Any]], None]:
    def check(out: dict[str, Any]) -> None:
        assert out["usage"]["inputs"] == count

    return check


def case(name: str, path: str, body: Any, expect: Expect = None, server: str = "limited") -> Any:
    """One nasty input: `body` is JSON-able, or raw bytes; `expect` is (status, error type), or
    None / a check of the 200 body."""
    return pytest.param(server, path, body, expect, id=name)


CATALOGUE = [
    # empty and whitespace-only texts
    case("blank-tab-newline", "/v1/classify", {"model": C, "inputs": "\t\n "}, INVALID),
    case("blank-qa-context", "/v1/qa", {"question": "who", "context": "   "}, INVALID),
    case("empty-qa-question", "/v1/qa", {"question": "", "context": "john"}, INVALID),
    case("blank-fill-mask", "/v1/fill-mask", {"inputs": ["a [MASK]", " "]}, INVALID),
    case("blank-tokenize-pair", "/v1/tokenize", {"model": C, "inputs": [["a", "\u3000"]]}, INVALID),
    # 1 MB: too large under a 4 KiB limit; with a 2 MiB limit, cut to the max length (or refused)
    case("1mb-over-the-body-limit", "/v1/classify", {"model": C, "inputs": MIB_TEXT}, TOO_LARGE),
    case(
        "1mb-truncated",
        "/v1/classify",
        {"model": C, "inputs": MIB_TEXT, "truncate": True},
        expect_labels(2),
        "roomy",
    ),
    case(
        "1mb-not-truncated",
        "/v1/classify",
        {"model": C, "inputs": MIB_TEXT, "truncate": False},
        INVALID,
        "roomy",
    ),
    case(
        "1mb-fill-mask-mask-first",
        "/v1/fill-mask",
        {"inputs": "[MASK] " + MIB_TEXT},
        expect_masks(1),
        "roomy",
    ),
    case("1mb-token-classify", "/v1/token-classify", {"inputs": MIB_TEXT}, None, "roomy"),
    # 10,000 inputs: over the 256 per request
    case("10k-texts", "/v1/classify", {"model": C, "inputs": ["a"] * 10_000}, INVALID, "roomy"),
    case(
        "10k-qa-pairs",
        "/v1/qa",
        {"inputs": [{"question": "a", "context": "b"}] * 10_000},
        INVALID,
        "roomy",
    ),
    case("10k-masks-texts", "/v1/fill-mask", {"inputs": ["[MASK]"] * 10_000}, INVALID, "roomy"),
    case("10k-over-the-body-limit", "/v1/token-classify", {"inputs": ["a"] * 10_000}, TOO_LARGE),
    # invalid UTF-8 in the body
    case(
        "utf8-stray-byte",
        "/v1/classify",
        b'{"model": "classification", "inputs": "a\xffb"}',
        UNREADABLE,
    ),
    case("utf8-overlong", "/v1/qa", b'{"question": "\xc0\xaf", "context": "john"}', UNREADABLE),
    case("utf8-cut-short", "/v1/fill-mask", b'{"inputs": "[MASK] \xe2\x82"}', UNREADABLE),
    # UTF-8-encoded surrogates: json.loads (bytes) decodes with surrogatepass, pydantic refuses
    case("utf8-encoded-surrogate", "/v1/token-classify", b'{"inputs": "\xed\xa0\x80"}', INVALID),
    # bodies json.loads refuses beyond JSON syntax, and encodings it accepts
    case("nested-1500-deep", "/v1/classify", NESTED, UNREADABLE),  # RecursionError
    case("integer-5000-digits", "/v1/fill-mask", HUGE_INT, UNREADABLE, "roomy"),  # int limit
    case(
        "float-overflows-to-inf",
        "/v1/classify",
        b'{"model": "multi-label", "inputs": "a", "top_k": 1e999}',
        INVALID,
    ),
    case(
        "utf8-bom",
        "/v1/classify",
        '\ufeff{"model": "multi-label", "inputs": "a"}'.encode(),
        expect_labels(3),
    ),
    case("utf16-body", "/v1/token-classify", '{"inputs": "john"}'.encode("utf-16")),
    # lone surrogates, escaped (valid JSON, not valid Unicode text); a proper pair is fine
    case(
        "lone-high-surrogate",
        "/v1/classify",
        b'{"model": "classification", "inputs": "a\\ud800"}',
        INVALID,
    ),
    case(
        "lone-low-surrogate-qa",
        "/v1/qa",
        b'{"question": "who", "context": "\\udc00 john"}',
        INVALID,
    ),
    case(
        "lone-surrogate-in-list",
        "/v1/fill-mask",
        b'{"inputs": ["[MASK]", "\\ud83d [MASK]"]}',
        INVALID,
    ),
    case(
        "lone-surrogate-as-key",
        "/v1/tokenize",
        b'{"model": "qa", "inputs": "a", "\\ud800": 1}',
        INVALID,
    ),
    case(
        "lone-surrogate-model-name",
        "/v1/token-classify",
        b'{"model": "\\ud800", "inputs": "a"}',
        (404, "model_not_found"),
    ),
    case(
        "surrogate-pair-is-emoji",
        "/v1/fill-mask",
        b'{"inputs": "\\ud83d\\ude00 [MASK]"}',
        expect_masks(1),
    ),
    # NUL and other control characters
    case("nul-classify", "/v1/classify", {"model": C, "inputs": "the\u0000cat\u0000"}),
    case(
        "nul-qa-context",
        "/v1/qa",
        {"question": "who ran", "context": "\u0000john\u0000 ran to paris"},
    ),
    case(
        "nul-fill-mask", "/v1/fill-mask", {"inputs": "\u0000[MASK]\u0000 [MASK]"}, expect_masks(2)
    ),
    case("only-nul-token-classify", "/v1/token-classify", {"inputs": "\u0000\u0001\u001f"}),
    case(
        "tokenless-qa-context",
        "/v1/qa",
        {"question": "who", "context": "\u200b\u0000\u200b"},
        INVALID,  # nothing to answer from: 422, not an empty answer list without no_answer
    ),
    case("tokenless-document", "/v1/summarize", {"inputs": ["a b.", "\u200b\u0000"]}, INVALID),
    case("emoji-summarize", "/v1/summarize", {"inputs": "👍🏽 the cat sat. 猫坐在垫子上。"}),
    # right-to-left text, combining marks
    case("rtl-classify", "/v1/classify", {"model": C, "inputs": [RTL, "\u202eevil\u202c"]}),
    case("rtl-qa", "/v1/qa", {"question": RTL, "context": RTL + " john ran to paris"}),
    case(
        "combining-fill-mask",
        "/v1/fill-mask",
        {"inputs": COMBINING + " [MASK] " + COMBINING},
        expect_masks(1),
    ),
    case("combining-token-classify", "/v1/token-classify", {"inputs": COMBINING + " john"}),
    case("combining-tokenize", "/v1/tokenize", {"model": "qa", "inputs": [[COMBINING, RTL]]}),
    # emoji (offsets count characters, not bytes or UTF-16 units)
    case(
        "emoji-classify",
        "/v1/classify",
        {"model": "multi-label", "inputs": EMOJI},
        expect_labels(3),
    ),
    case(
        "emoji-fill-mask-offsets",
        "/v1/fill-mask",
        {"inputs": EMOJI + " [MASK] 🎉 [MASK]"},
        expect_masks(2),
    ),
    case(
        "emoji-qa-offsets",
        "/v1/qa",
        {"question": "who", "context": EMOJI + " john ran to paris", "top_k": 5},
    ),
    case("emoji-token-classify", "/v1/token-classify", {"inputs": "👍🏽 john 😀 paris"}),
    # Chinese
    case(
        "chinese-classify",
        "/v1/classify",
        {"model": C, "inputs": [CHINESE, [CHINESE, "猫"]]},
        INVALID,
    ),
    case("chinese-pairs-classify", "/v1/classify", {"model": C, "inputs": [[CHINESE, "猫"]]}),
    case("chinese-qa", "/v1/qa", {"question": "猫在哪里?", "context": CHINESE * 3, "top_k": 3}),
    case("chinese-fill-mask", "/v1/fill-mask", {"inputs": "猫[MASK]在垫子上"}, expect_masks(1)),
    # wrong JSON types
    case("inputs-true", "/v1/classify", {"model": C, "inputs": True}, INVALID),
    case("inputs-object", "/v1/fill-mask", {"inputs": {"text": "[MASK]"}}, INVALID),
    case("top-k-text", "/v1/fill-mask", {"inputs": "[MASK]", "top_k": "many"}, INVALID),
    case("truncate-null", "/v1/token-classify", {"inputs": "a", "truncate": None}, INVALID),
    case("model-list", "/v1/qa", {"model": ["qa"], "question": "a", "context": "b"}, INVALID),
    case("qa-inputs-strings", "/v1/qa", {"inputs": ["who", "john"]}, INVALID),
    case("body-is-a-number", "/v1/tokenize", b"12", INVALID),
    # nested lists
    case(
        "triple-instead-of-pair", "/v1/classify", {"model": C, "inputs": [["a", "b", "c"]]}, INVALID
    ),
    case("nested-three-deep", "/v1/tokenize", {"model": C, "inputs": [[["a"]]]}, INVALID),
    case("pairs-where-texts-only", "/v1/fill-mask", {"inputs": [["[MASK]", "b"]]}, INVALID),
    case(
        "pairs-are-fine-for-classify",
        "/v1/classify",
        {"model": C, "inputs": [["a", "b"], ["c", "d"]]},
    ),
    # numbers as text, and numbers that are not text
    case(
        "numbers-as-text",
        "/v1/classify",
        {"model": C, "inputs": ["12345", "3.14", "-1e10", "0x1F"]},
    ),
    case("numbers-as-text-qa", "/v1/qa", {"question": "how many", "context": "1 2 3 4 5 1e10"}),
    case("number-not-text", "/v1/token-classify", {"inputs": 12345}, INVALID),
    case("numbers-in-list", "/v1/tokenize", {"model": C, "inputs": ["a", 1.5]}, INVALID),
    # duplicate keys: the last one wins (as in Python's json and JavaScript)
    case(
        "duplicate-inputs-last-wins",
        "/v1/classify",
        b'{"model": "classification", "inputs": "a", "inputs": ["a", "b", "c"]}',
        expect_inputs(3),
    ),
    case(
        "duplicate-model-last-wins",
        "/v1/classify",
        b'{"model": "nope", "model": "multi-label", "inputs": "a"}',
        expect_labels(3),
    ),
    case(
        "duplicate-top-k-last-bad",
        "/v1/fill-mask",
        b'{"inputs": "[MASK]", "top_k": 2, "top_k": 0}',
        INVALID,
    ),
    # [MASK] absent, lower-case, many
    case("mask-lower-case", "/v1/fill-mask", {"inputs": "the [mask] sat"}, INVALID),
    case("mask-absent-in-one", "/v1/fill-mask", {"inputs": ["a [MASK]", "no mask"]}, INVALID),
    case("twenty-masks", "/v1/fill-mask", {"inputs": " ".join(["[MASK]"] * 20)}, expect_masks(20)),
    case(
        "masks-past-max-length",
        "/v1/fill-mask",
        {"inputs": "[MASK]" * 70},
        expect_masks(MAX_LENGTH - 2),
    ),
    case(
        "masks-past-max-length-no-cut",
        "/v1/fill-mask",
        {"inputs": "[MASK]" * 70, "truncate": False},
        INVALID,
    ),
    # QA contexts shorter than their questions
    case(
        "qa-short-context",
        "/v1/qa",
        {"question": "who ran to paris and then to london with mary " * 3, "context": "john"},
        expect_answer("john"),
    ),
    case("qa-one-char-context", "/v1/qa", {"question": "what is it", "context": "x", "top_k": 20}),
    # top_k: 0, negative, huge
    case(
        "classify-top-k-negative", "/v1/classify", {"model": C, "inputs": "a", "top_k": -1}, INVALID
    ),
    case(
        "classify-top-k-huge",
        "/v1/classify",
        {"model": C, "inputs": "a", "top_k": 10**30},
        expect_labels(2),
    ),
    case("qa-top-k-zero", "/v1/qa", {"question": "a", "context": "b", "top_k": 0}, INVALID),
    case("qa-top-k-negative", "/v1/qa", {"question": "a", "context": "b", "top_k": -5}, INVALID),
    case("qa-top-k-huge", "/v1/qa", {"question": "a", "context": "b", "top_k": 10**9}, INVALID),
    case("fill-mask-top-k-zero", "/v1/fill-mask", {"inputs": "[MASK]", "top_k": 0}, INVALID),
    case("fill-mask-top-k-negative", "/v1/fill-mask", {"inputs": "[MASK]", "top_k": -1}, INVALID),
    case("fill-mask-top-k-huge", "/v1/fill-mask", {"inputs": "[MASK]", "top_k": 10**9}, INVALID),
    case("fill-mask-top-k-float", "/v1/fill-mask", {"inputs": "[MASK]", "top_k": 2.5}, INVALID),
    case(
        "fill-mask-top-k-max",
        "/v1/fill-mask",
        {"inputs": "[MASK] [MASK]", "top_k": FILL_MASK_TOP_K},
        expect_masks(2),
    ),
]


@pytest.mark.parametrize(("server", "path", "body", "expect"), CATALOGUE)
def test_nasty_input(
    request: pytest.FixtureRequest, server: str, path: str, body: Any, expect: Expect
) -> None:
    live: Live = request.getfixturevalue(server)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = post_raw(live, path, raw)
    if isinstance(expect, tuple):
        status, kind = expect
        error_of(r, status, kind)
        return
    parsed = body if isinstance(body, dict) else json.loads(raw)
    out = check_ok(path, parsed, r)
    if expect is not None:
        expect(out)
