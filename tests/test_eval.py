"""Golden questions: metrics through the real engine, thresholds as exit codes, clear errors for bad files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.cli.commands import run_eval
from bot.operations.golden import (
    GoldenFileError,
    GoldenItem,
    ItemResult,
    RankedPage,
    below_thresholds,
    first_hit_rank,
    hit_at_k,
    parse_golden,
    reciprocal_rank,
    summarise,
)
from tests.wiki import add_samples

GOLDEN_YAML = """\
# Questions the sample pages answer, and one they don't.
- question: "How many days of paid annual leave do full-time employees get?"
  expect_titles: ["Hr Leave Policy"]
- question: "When is the staging database rebuilt?"
  expect_titles: ["staging environment"]   # titles match case-insensitively
  space: ENG
- question: "How much is on-call pay per week?"
  expect_titles: ["Oncall Handbook"]
- question: "What is the recipe for sourdough bread with rye flour?"
  expect_refusal: true
"""
THRESHOLDS = {"hit_at_5": 0.9, "mrr": 0.9, "refusal_accuracy": 0.9}


async def run(settings, path: Path, thresholds: dict[str, float]) -> tuple[int, dict]:  # type: ignore[no-untyped-def, type-arg]
    out = io.StringIO()
    code = await run_eval(settings, path, thresholds=thresholds, as_json=True, out=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else {}


async def test_golden_file_scores_the_engine_and_gates_on_thresholds(  # type: ignore[no-untyped-def]
    services, confluence, make_settings, tmp_path: Path
) -> None:
    ids = add_samples(confluence)
    assert (await services.sync.run(spaces=["ENG"], trigger="cli")).status == "succeeded"

    yaml_file = tmp_path / "golden.yaml"
    yaml_file.write_text(GOLDEN_YAML, encoding="utf-8")
    code, report = await run(make_settings(), yaml_file, THRESHOLDS)
    assert code == 0, report
    assert report["overall"] == {"items": 4, "answerable": 3, "hit_at_1": 1.0, "hit_at_5": 1.0, "mrr": 1.0,
                                 "refusal_accuracy": 1.0, "closest_hit_at_5": 1.0}
    assert set(report["spaces"]) == {"(all)", "ENG"} and report["spaces"]["ENG"]["items"] == 1
    assert [i["refused"] for i in report["items"]] == [False, False, False, True]

    # The same questions as JSONL by page id, plus one whose expected page is wrong: below the thresholds.
    lines = [
        {"question": "How many days of paid annual leave do full-time employees get?",
         "expect_page_ids": [ids["Hr Leave Policy"]]},
        {"question": "When is the staging database rebuilt?",
         "expect_page_ids": [ids["Staging Environment"]]},
        {"question": "How much is on-call pay per week?", "expect_titles": ["Howto Vpn Setup"]},
        {"question": "What is the recipe for sourdough bread with rye flour?", "expect_refusal": True},
    ]
    jsonl_file = tmp_path / "golden.jsonl"
    jsonl_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    code, report = await run(make_settings(), jsonl_file, THRESHOLDS)
    assert code == 1
    assert report["overall"]["hit_at_5"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["overall"]["refusal_accuracy"] == 1.0
    assert report["below_threshold"] == ["hit_at_5 0.67 < 0.90", "mrr 0.67 < 0.90"]
    code, _ = await run(make_settings(), jsonl_file, {"hit_at_5": 0.6, "mrr": 0.6, "refusal_accuracy": 1.0})
    assert code == 0


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.yaml", "- question: [unclosed\n", "bad.yaml line 2: not valid YAML"),
    ("bad.yaml", "question: one\n", "expected a list of items"),
    ("bad.yaml", "", "no golden questions"),
    ("bad.yaml", "- question: a\n  expect_titles: [A]\n- expect_titles: [B]\n",
     "bad.yaml item 2 (line 3): `question` must be a non-empty string"),
    ("bad.yaml", "- question: a\n  expect_title: [A]\n", "item 1 (line 1): unknown key(s) expect_title"),
    ("bad.yaml", "- question: a\n", "item 1 (line 1): give `expect_titles` or `expect_page_ids`"),
    ("bad.yaml", "- question: a\n  expect_refusal: yes please\n", "`expect_refusal` must be true or false"),
    ("bad.yaml", "- question: a\n  expect_refusal: true\n  expect_titles: [A]\n", "can't also expect pages"),
    ("bad.jsonl", '{"question": "a", "expect_titles": ["A"]}\n\n{"question": "b", \n',
     "bad.jsonl line 3: not valid JSON"),
    ("bad.jsonl", '["a"]\n', "bad.jsonl line 1: expected a mapping"),
    ("bad.jsonl", '{"question": "a", "expect_titles": [{"t": 1}]}\n',
     "`expect_titles` must be a list of strings"),
])
def test_malformed_golden_file_is_refused_naming_the_place(name: str, content: str, message: str) -> None:
    with pytest.raises(GoldenFileError) as raised:
        parse_golden(content, source=name)
    assert message in str(raised.value)


async def test_malformed_golden_file_exits_2(make_settings, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "golden.jsonl"
    path.write_text('{"question": "a", "expect_titles": ["A"]}\n{"question": "b"\n', encoding="utf-8")
    assert await run_eval(make_settings(), path, thresholds={}, as_json=False) == 2
    assert f"askdocs eval: {path} line 2: not valid JSON" in capsys.readouterr().err


async def test_missing_golden_file_exits_2(make_settings, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert await run_eval(make_settings(), tmp_path / "nope.yaml", thresholds={}, as_json=True) == 2
    assert "nope.yaml: can't read" in capsys.readouterr().err


def test_demo_golden_file_parses() -> None:
    path = Path(__file__).parent.parent / "bot" / "demo" / "golden.yaml"
    items = parse_golden(path.read_text(encoding="utf-8"), source=str(path))
    assert len(items) == 22 and sum(i.expect_refusal for i in items) == 4


def test_yaml_and_jsonl_items_read_alike() -> None:
    yaml_items = parse_golden(
        "- question: ' Where  is X? '\n  expect_page_ids: [123]\n  spaces: [ENG, OPS]\n", source="g.yml"
    )
    jsonl_items = parse_golden(
        '{"question": "Where is X?", "expect_page_ids": ["123"], "spaces": ["ENG", "OPS"]}', source="g.txt"
    )
    strip = [GoldenItem(i.question, i.expect_titles, i.expect_page_ids, i.expect_refusal, i.spaces)
             for i in (*yaml_items, *jsonl_items)]
    assert strip[0] == strip[1] == GoldenItem("Where is X?", (), ("123",), False, ("ENG", "OPS"))


PAGES = [RankedPage("Deploys", "1"), RankedPage("Deploys", "1"), RankedPage("VPN setup", "2"),
         RankedPage("Leave", "3")]


@pytest.mark.parametrize(("ranked", "titles", "page_ids", "rank"), [
    (PAGES, ["deploys"], [], 1),
    (PAGES, ["VPN  Setup"], [], 2),  # the repeated page counts once
    (PAGES, [], ["3"], 3),
    (PAGES, ["Leave", "VPN setup"], [], 2),  # any expected page; the first one ranked wins
    (PAGES, ["Payroll"], ["9"], None),
    ([], ["Deploys"], [], None),
])
def test_first_hit_rank(ranked: list[RankedPage], titles: list[str], page_ids: list[str],
                        rank: int | None) -> None:
    assert first_hit_rank(ranked, GoldenItem("q", tuple(titles), tuple(page_ids))) == rank


@pytest.mark.parametrize(("rank", "k", "hit", "rr"), [
    (1, 1, True, 1.0), (2, 1, False, 0.5), (5, 5, True, 0.2), (6, 5, False, 1 / 6), (None, 5, False, 0.0),
])
def test_hit_at_k_and_reciprocal_rank(rank: int | None, k: int, hit: bool, rr: float) -> None:
    assert hit_at_k(rank, k) is hit
    assert reciprocal_rank(rank) == pytest.approx(rr)


ANSWERABLE = GoldenItem("q", ("A",))
UNANSWERABLE = GoldenItem("r", expect_refusal=True)


@pytest.mark.parametrize(("results", "expected"), [
    ([ItemResult(ANSWERABLE, False, 1, 1), ItemResult(ANSWERABLE, False, 2, 2)],
     {"hit_at_1": 0.5, "hit_at_5": 1.0, "mrr": 0.75, "refusal_accuracy": 1.0, "closest_hit_at_5": 1.0}),
    # Refused although answerable: a miss, but the right page was the closest one.
    ([ItemResult(ANSWERABLE, True, None, 1), ItemResult(UNANSWERABLE, True, None, None)],
     {"hit_at_1": 0.0, "hit_at_5": 0.0, "mrr": 0.0, "refusal_accuracy": 0.5, "closest_hit_at_5": 1.0}),
    ([ItemResult(UNANSWERABLE, False, None, None)],
     {"hit_at_1": None, "hit_at_5": None, "mrr": None, "refusal_accuracy": 0.0, "closest_hit_at_5": None}),
    ([], {"hit_at_1": None, "mrr": None, "refusal_accuracy": None}),
])
def test_summarise(results: list[ItemResult], expected: dict[str, float | None]) -> None:
    metrics = summarise(results)
    assert {name: getattr(metrics, name) for name in expected} == expected


def test_thresholds_compare_defined_metrics_only() -> None:
    metrics = summarise([ItemResult(UNANSWERABLE, False, None, None)])
    failures = below_thresholds(metrics, {"hit_at_5": 0.9, "refusal_accuracy": 0.5})
    assert failures == ["refusal_accuracy 0.00 < 0.50"]
    assert below_thresholds(metrics, {"refusal_accuracy": 0.0}) == []
