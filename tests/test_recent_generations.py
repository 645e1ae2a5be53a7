"""RecentGenerations: which ids this server made lately (their stats may lag a moment)."""

from __future__ import annotations

from naive_mcp.services import RecentGenerations


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ids_expire_after_the_window() -> None:
    clock = Clock()
    recent = RecentGenerations(window=300, clock=clock)
    recent.add("gen-a")
    clock.now += 200
    recent.add("gen-b")
    assert "gen-a" in recent and "gen-b" in recent
    clock.now += 150  # gen-a is 350 s old, gen-b 150 s
    assert "gen-a" not in recent and "gen-b" in recent
    recent.add("gen-c")
    assert len(recent) == 2  # gen-a was dropped, not just hidden


def test_adding_an_id_again_renews_it() -> None:
    clock = Clock()
    recent = RecentGenerations(window=300, clock=clock)
    recent.add("gen-a")
    recent.add("gen-b")
    clock.now += 200
    recent.add("gen-a")
    clock.now += 150
    recent.add("gen-c")
    assert "gen-a" in recent and "gen-b" not in recent


def test_at_most_limit_ids_are_kept_oldest_dropped_first() -> None:
    recent = RecentGenerations(window=300, clock=Clock(), limit=3)
    for index in range(5):
        recent.add(f"gen-{index}")
    assert len(recent) == 3
    assert [f"gen-{i}" in recent for i in range(5)] == [False, False, True, True, True]
