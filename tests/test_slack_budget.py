"""The workspace rate budget: intermediate writes give way, final writes never do (issue 17)."""

from __future__ import annotations

from bot.slack.budget import RateBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_intermediate_writes_stop_short_of_the_limit_and_resume_as_the_window_slides() -> None:
    clock = Clock()
    budget = RateBudget({"chat.update": 10}, window_s=60, clock=clock)
    taken = [budget.try_take("T1", "chat.update") for _ in range(12)]
    assert taken.count(True) == 8 and budget.dropped == 4  # a fifth of the minute stays for final writes
    assert budget.try_take("T2", "chat.update")  # another workspace has its own budget
    assert budget.try_take("T1", "chat.appendStream")  # and every method its own
    clock.now = 60.5
    assert budget.try_take("T1", "chat.update")


def test_final_writes_are_never_refused_and_hold_back_the_intermediate_ones() -> None:
    clock = Clock()
    budget = RateBudget({"chat.update": 10}, window_s=60, clock=clock)
    for _ in range(12):
        budget.take_final("T1", "chat.update")  # never refused, even past the limit
    assert not budget.try_take("T1", "chat.update")
    clock.now = 61
    assert budget.try_take("T1", "chat.update")


def test_a_429_pauses_intermediate_writes_for_its_retry_after() -> None:
    clock = Clock()
    budget = RateBudget({"chat.appendStream": 100}, window_s=60, clock=clock)
    budget.exhaust("T1", "chat.appendStream", retry_after_s=5)
    assert not budget.try_take("T1", "chat.appendStream")
    clock.now = 5.1
    assert budget.try_take("T1", "chat.appendStream")
