"""In-process metrics in the Prometheus text format (counters and summaries; no extra dependency)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


def sample_value(value: float) -> str:
    """A Prometheus sample value without losing digits (`:g` turned a Unix timestamp into 1.79558e+09)."""
    number = float(value)
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"


@dataclass
class Metrics:
    """Counters and duration sums for /metrics. One instance per process, owned by Services."""

    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(
        default_factory=lambda: defaultdict(float)
    )
    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    help: dict[str, str] = field(default_factory=dict)

    def inc(self, name: str, value: float = 1.0, *, help: str = "", **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += value
        if help:
            self.help.setdefault(name, help)

    def observe(self, name: str, seconds: float, *, help: str = "") -> None:
        samples = self.durations[name]
        samples.append(seconds)
        if len(samples) > 2048:  # a sliding window for the quantiles; count and sum stay exact below
            del samples[: len(samples) - 2048]
        self.inc(f"{name}_count")
        self.inc(f"{name}_sum", seconds)
        if help:
            self.help.setdefault(name, help)

    def render(self) -> str:
        lines: list[str] = []
        described: set[str] = set()
        for name, samples in sorted(self.durations.items()):
            lines.append(f"# HELP {name} {self.help.get(name, name)}")
            lines.append(f"# TYPE {name} summary")
            described.update({name, f"{name}_count", f"{name}_sum"})
            ordered = sorted(samples)
            for q in (0.5, 0.95, 0.99):
                value = ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
                lines.append(f'{name}{{quantile="{q}"}} {value:.6f}')
            lines.append(f"{name}_count {sample_value(self.counters.get((f'{name}_count', ()), 0))}")
            lines.append(f"{name}_sum {self.counters.get((f'{name}_sum', ()), 0):.6f}")
        by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = defaultdict(list)
        for (name, labels), value in self.counters.items():
            if name not in described:
                by_name[name].append((labels, value))
        for name in sorted(by_name):
            lines.append(f"# HELP {name} {self.help.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for labels, value in sorted(by_name[name]):
                lines.append(f"{name}{_labels(dict(labels))} {sample_value(value)}")
        return "\n".join(lines) + "\n"
