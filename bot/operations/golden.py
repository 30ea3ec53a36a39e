"""`askdocs eval FILE`: score the answer engine against golden questions.

File: YAML (a list of items) or JSONL (one item per line). An item has `question`, `expect_titles` and/or
`expect_page_ids` (any one of them counts as a hit), optional `expect_refusal: true`, optional `space` or
`spaces` (search only those).

Definitions (pure functions below):
- An item is *answerable* unless `expect_refusal` is true.
- The ranking of an answered question is its cited sources in citation order (one per page). A refused
  answer ranks nothing: the user got "I couldn't find that", so it is a miss for hit@k and MRR even when a
  right page was among the closest ones. That case is reported as `closest_hit_at_5` (the ranking then being
  the closest pages), which separates "retrieval found it but the evidence test refused" from "retrieval
  missed it".
- hit@k: share of answerable items with a right page at rank ≤ k. MRR: mean of 1/rank (0 on a miss), over
  answerable items. refusal_accuracy: share of all items where refused == expect_refusal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bot.answering.models import AskContext

if TYPE_CHECKING:
    from bot.answering.engine import AnswerEngine
    from bot.answering.models import Answer

ALL_SPACES = "(all)"
KNOWN_KEYS = frozenset({"question", "expect_titles", "expect_page_ids", "expect_refusal", "space", "spaces"})
THRESHOLD_METRICS = frozenset({"hit_at_5", "mrr", "refusal_accuracy"})


class GoldenFileError(ValueError):
    """The golden file can't be used; the message names the file and the line or item."""


@dataclass(frozen=True)
class GoldenItem:
    question: str
    expect_titles: tuple[str, ...] = ()
    expect_page_ids: tuple[str, ...] = ()
    expect_refusal: bool = False
    spaces: tuple[str, ...] = ()
    where: str = ""  # "line 3" / "item 2 (line 7)", for messages

    @property
    def answerable(self) -> bool:
        return not self.expect_refusal

    @property
    def space_label(self) -> str:
        return ",".join(self.spaces) or ALL_SPACES


@dataclass(frozen=True)
class RankedPage:
    title: str
    page_id: str


@dataclass(frozen=True)
class ItemResult:
    item: GoldenItem
    refused: bool
    rank: int | None  # of the first right page among the cited sources; None: no hit (or refused)
    closest_rank: int | None  # the same over sources, or the closest pages when refused
    top_score: float | None = None
    cited: tuple[str, ...] = ()

    @property
    def refusal_correct(self) -> bool:
        return self.refused == self.item.expect_refusal


@dataclass(frozen=True)
class EvalMetrics:
    items: int
    answerable: int
    hit_at_1: float | None
    hit_at_5: float | None
    mrr: float | None
    refusal_accuracy: float | None
    closest_hit_at_5: float | None

    def to_json(self) -> dict[str, Any]:
        return {name: (round(value, 4) if isinstance(value, float) else value)
                for name, value in self.__dict__.items()}


# ---- parsing (pure) --------------------------------------------------------------------------------------


def _strings(value: Any, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) and not isinstance(v, bool)
                                              for v in value):
        raise GoldenFileError(f"{where}: `{key}` must be a list of strings")
    return tuple(str(v).strip() for v in value if str(v).strip())


def golden_item(raw: Any, where: str) -> GoldenItem:
    """One parsed item (a mapping) → GoldenItem, or GoldenFileError naming `where`."""
    if not isinstance(raw, dict):
        raise GoldenFileError(f"{where}: expected a mapping with `question`, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in KNOWN_KEYS)
    if unknown:
        raise GoldenFileError(f"{where}: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(KNOWN_KEYS))})")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise GoldenFileError(f"{where}: `question` must be a non-empty string")
    refusal = raw.get("expect_refusal", False)
    if not isinstance(refusal, bool):
        raise GoldenFileError(f"{where}: `expect_refusal` must be true or false")
    titles = _strings(raw.get("expect_titles") or [], "expect_titles", where)
    page_ids = _strings(raw.get("expect_page_ids") or [], "expect_page_ids", where)
    if "space" in raw and "spaces" in raw:
        raise GoldenFileError(f"{where}: give `space` or `spaces`, not both")
    spaces = _strings(raw.get("spaces", raw.get("space")) or [], "spaces", where)
    if refusal and (titles or page_ids):
        raise GoldenFileError(f"{where}: an `expect_refusal` item can't also expect pages")
    if not refusal and not (titles or page_ids):
        raise GoldenFileError(
            f"{where}: give `expect_titles` or `expect_page_ids`, or `expect_refusal: true`"
        )
    return GoldenItem(" ".join(question.split()), titles, page_ids, refusal, spaces, where)


def parse_jsonl(text: str, *, source: str) -> list[GoldenItem]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            raise GoldenFileError(f"{source} line {number}: not valid JSON: {error.msg}") from error
        items.append(golden_item(raw, f"{source} line {number}"))
    if not items:
        raise GoldenFileError(f"{source}: no golden questions")
    return items


def parse_yaml(text: str, *, source: str) -> list[GoldenItem]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise GoldenFileError(f"{source}{at}: not valid YAML: {getattr(error, 'problem', None) or error}") \
            from error
    if data is None:
        raise GoldenFileError(f"{source}: no golden questions")
    if not isinstance(data, list) or not isinstance(root, yaml.SequenceNode):
        raise GoldenFileError(f"{source}: expected a list of items (`- question: …`)")
    return [golden_item(raw, f"{source} item {i} (line {node.start_mark.line + 1})")
            for i, (raw, node) in enumerate(zip(data, root.value, strict=True), start=1)]


def parse_golden(text: str, *, source: str) -> list[GoldenItem]:
    """YAML for .yaml/.yml, JSONL for .jsonl/.ndjson; otherwise JSONL when the first line is an object."""
    suffix = Path(source).suffix.lower()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if suffix in (".jsonl", ".ndjson") or (suffix not in (".yaml", ".yml") and first.startswith("{")):
        return parse_jsonl(text, source=source)
    return parse_yaml(text, source=source)


# ---- metrics (pure) --------------------------------------------------------------------------------------


def _norm(title: str) -> str:
    return " ".join(title.split()).casefold()


def first_hit_rank(ranked: Sequence[RankedPage], item: GoldenItem) -> int | None:
    """1-based rank of the first distinct page that the item expects (by page id or title), else None."""
    titles = {_norm(t) for t in item.expect_titles}
    page_ids = set(item.expect_page_ids)
    seen: set[str] = set()
    for page in ranked:
        if page.page_id in seen:
            continue
        seen.add(page.page_id)
        if page.page_id in page_ids or _norm(page.title) in titles:
            return len(seen)
    return None


def hit_at_k(rank: int | None, k: int) -> bool:
    return rank is not None and rank <= k


def reciprocal_rank(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / rank


def _mean(values: Iterable[float]) -> float | None:
    listed = list(values)
    return sum(listed) / len(listed) if listed else None


def summarise(results: Sequence[ItemResult]) -> EvalMetrics:
    """Hit and MRR metrics over answerable items, refusal accuracy over all; None when nothing to average."""
    answerable = [r for r in results if r.item.answerable]
    return EvalMetrics(
        items=len(results),
        answerable=len(answerable),
        hit_at_1=_mean(float(hit_at_k(r.rank, 1)) for r in answerable),
        hit_at_5=_mean(float(hit_at_k(r.rank, 5)) for r in answerable),
        mrr=_mean(reciprocal_rank(r.rank) for r in answerable),
        refusal_accuracy=_mean(float(r.refusal_correct) for r in results),
        closest_hit_at_5=_mean(float(hit_at_k(r.closest_rank, 5)) for r in answerable),
    )


def by_space(results: Sequence[ItemResult]) -> dict[str, EvalMetrics]:
    spaces: dict[str, list[ItemResult]] = {}
    for result in results:
        spaces.setdefault(result.item.space_label, []).append(result)
    return {space: summarise(rows) for space, rows in sorted(spaces.items())}


def below_thresholds(metrics: EvalMetrics, thresholds: Mapping[str, float]) -> list[str]:
    """`"mrr 0.61 < 0.70"` for each metric under its threshold; undefined metrics aren't compared."""
    failures = []
    for name, minimum in thresholds.items():
        value = getattr(metrics, name)
        if value is not None and value < minimum:
            failures.append(f"{name} {value:.2f} < {minimum:.2f}")
    return failures


def score_answer(item: GoldenItem, answer: Answer) -> ItemResult:
    cited = [RankedPage(s.title, s.page_id) for s in answer.sources]
    shown = cited if not answer.refused else [RankedPage(s.title, s.page_id) for s in answer.closest]
    return ItemResult(
        item=item, refused=answer.refused, rank=None if answer.refused else first_hit_rank(cited, item),
        closest_rank=first_hit_rank(shown, item), top_score=answer.top_score,
        cited=tuple(p.title for p in cited),
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_report(results: Sequence[ItemResult], *, failures: Sequence[str]) -> str:
    lines = []
    for r in results:
        if r.item.expect_refusal:
            ok = r.refused
            what = "refused" if r.refused else f"answered ({', '.join(r.cited) or 'no sources'})"
        else:
            ok = hit_at_k(r.rank, 5)
            what = ("refused" + (f", right page closest #{r.closest_rank}" if r.closest_rank else "")
                    if r.refused else f"rank {r.rank}" if r.rank else f"miss ({', '.join(r.cited[:3])})")
        lines.append(f"{'✓' if ok else '✗'} {r.item.question} — {what}")
    lines.append("")
    header = (f"{'space':<16} {'items':>5} {'answerable':>10} {'hit@1':>6} {'hit@5':>6} {'MRR':>6} "
              f"{'refusal':>8}")
    lines += [header, "-" * len(header)]
    rows = [*by_space(results).items(), ("overall", summarise(results))]
    for space, m in rows:
        lines.append(f"{space:<16} {m.items:>5} {m.answerable:>10} {_pct(m.hit_at_1):>6} "
                     f"{_pct(m.hit_at_5):>6} {_pct(m.mrr):>6} {_pct(m.refusal_accuracy):>8}")
    overall = summarise(results)
    lines.append(f"(refused answerable items whose right page was among the closest: closest hit@5 "
                 f"{_pct(overall.closest_hit_at_5)})")
    lines += [f"below threshold: {f}" for f in failures]
    return "\n".join(lines)


def report_json(results: Sequence[ItemResult], *, failures: Sequence[str]) -> dict[str, Any]:
    return {
        "overall": summarise(results).to_json(),
        "spaces": {space: m.to_json() for space, m in by_space(results).items()},
        "items": [{"question": r.item.question, "expect_refusal": r.item.expect_refusal, "refused": r.refused,
                   "rank": r.rank, "closest_rank": r.closest_rank, "cited": list(r.cited),
                   "top_score": None if r.top_score is None else round(r.top_score, 4)} for r in results],
        "below_threshold": list(failures),
    }


# ---- I/O at the edges ------------------------------------------------------------------------------------


def read_golden(path: str | Path) -> list[GoldenItem]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GoldenFileError(f"{path}: can't read: {error}") from error
    return parse_golden(text, source=str(path))


async def run_golden(engine: AnswerEngine, items: Sequence[GoldenItem]) -> list[ItemResult]:
    """Each item through the same engine Slack uses; logged with surface "eval" (gaps ignore those)."""
    results = []
    for item in items:
        answer = await engine.answer(item.question, spaces=list(item.spaces) or None,
                                     context=AskContext(surface="eval"))
        results.append(score_answer(item, answer))
    return results
