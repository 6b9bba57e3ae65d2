"""What API processes share (server/core/cluster.py), without processes: the pair budget and each
process's state. The processes themselves: tests/test_multiprocess.py."""

from __future__ import annotations

from server.core.cluster import Cluster, PairBudget


def test_max_pairs_in_flight_holds_across_processes():
    """The budget of pairs is one counter in shared memory that every API process takes from."""
    cluster = Cluster(2)
    first = PairBudget(100, shared=cluster.pairs, shared_bulk=cluster.bulk_pairs)
    second = PairBudget(100, shared=cluster.pairs, shared_bulk=cluster.bulk_pairs)
    assert first.try_take(60)
    assert not second.try_take(41)  # 60 + 41 > 100, though this process has nothing in flight
    assert second.try_take(40) and second.in_flight == first.in_flight == 100
    first.give_back(60)
    assert second.try_take(60)
    assert PairBudget(100).try_take(100) and not PairBudget(100).try_take(101)


def lanes_hold(budget: PairBudget, other: PairBudget) -> None:
    """Bulk takes at most limit - reserve; interactive takes from the whole budget, so bulk never
    crowds it out of the reserve; `other` shares the counters (another process, or the same one)."""
    assert budget.try_take(60, bulk=True)
    assert not other.try_take(21, bulk=True), "bulk went into the interactive reserve"
    assert other.try_take(20, bulk=True) and budget.bulk_in_flight == 80
    assert other.try_take(20) and budget.in_flight == 100, "an interactive request was refused the reserve"
    assert not budget.try_take(1), "the whole budget is a hard limit for interactive requests too"
    budget.give_back(60, bulk=True)
    assert other.bulk_in_flight == 20 and other.in_flight == 40
    assert not other.try_take(61, bulk=True) and other.try_take(60, bulk=True)


def test_bulk_pairs_never_take_the_interactive_reserve():
    lanes_hold(budget := PairBudget(100, reserve=20), budget)


def test_the_reserve_holds_across_processes():
    cluster = Cluster(2)
    lanes_hold(
        PairBudget(100, 20, shared=cluster.pairs, shared_bulk=cluster.bulk_pairs),
        PairBudget(100, 20, shared=cluster.pairs, shared_bulk=cluster.bulk_pairs),
    )


def test_cluster_is_ready_when_every_process_is_and_the_supervisor_said_so():
    from server.core.cluster import ProcessState

    cluster = Cluster(2)
    assert [cluster.state(i) for i in range(2)] == [ProcessState.STARTING] * 2
    cluster.index = 0
    cluster.mark_warmed_up()
    assert cluster.state(0) == ProcessState.WARMED_UP and not cluster.all_warmed_up()
    cluster.index = 1
    cluster.mark_warmed_up()
    assert cluster.all_warmed_up() and not cluster.all_ready()
    cluster.mark_all_ready()
    assert cluster.all_ready() and cluster.state(1) == ProcessState.READY
