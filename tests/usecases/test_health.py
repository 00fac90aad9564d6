"""Health as state: listeners told of each change, shutdown final, the index watch setting it."""

from __future__ import annotations

from image2sdr.server.usecases import Health, HealthState, IndexWatch


class Index:
    """What IndexWatch asks of an index: whether it can serve, and why not when it knows."""

    def __init__(self) -> None:
        self.up = True
        self.fault = ""

    def available(self) -> bool:
        return self.up

    def problem(self) -> str:
        return self.fault


def test_listeners_hear_the_state_now_and_each_change_once() -> None:
    health, heard = Health(), []
    health.listen(heard.append)
    health.set(False, "the index is unavailable")
    health.set(False, "the index is unavailable")  # no change, no news
    health.set(True)
    assert heard == [HealthState(True), HealthState(False, "the index is unavailable"), HealthState(True)]


def test_stopping_is_final() -> None:
    health, heard = Health(), []
    health.listen(heard.append)
    health.stop()
    health.set(True)
    assert health.state() == HealthState(False, "shutting down")
    assert heard[-1] == HealthState(False, "shutting down")


def test_the_index_watch_follows_the_index() -> None:
    index, health = Index(), Health()
    watch = IndexWatch(index, health, every_s=3600)  # never runs by itself here: checked by hand
    health.set(True)
    assert watch.next_check_in() == 3600
    index.up = False
    assert watch.check() is False
    assert watch.next_check_in() == 1.0  # while the index is down: each second, to be back soon after it
    assert health.state() == HealthState(False, "the index is unavailable")
    index.fault = "Milvus collection x_visual is missing"
    assert watch.check() is False and health.state() == HealthState(False, index.fault)  # the reason it knows
    index.fault = ""
    index.up = True
    assert watch.check() is True and health.state().serving
    assert watch.next_check_in() == 3600
