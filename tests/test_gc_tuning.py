"""The worker's cycle-collector threshold: raised while any worker runs, then restored."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from coordinator.gc_tuning import THRESHOLD, fewer_collections


@pytest.fixture(autouse=True)
def default_threshold() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_overlapping_uses_restore_the_threshold_only_when_the_last_ends() -> None:
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    assert gc.get_threshold() == (THRESHOLD, 10, 10)
    second.__enter__()
    first.__exit__(None, None, None)  # the first worker stops while another runs
    assert gc.get_threshold() == (THRESHOLD, 10, 10)
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def _fail_inside() -> None:
    with fewer_collections():
        raise RuntimeError(gc.get_threshold())


def test_an_error_still_restores_and_a_higher_threshold_is_kept() -> None:
    with pytest.raises(RuntimeError) as inside:
        _fail_inside()
    assert inside.value.args == ((THRESHOLD, 10, 10),)
    assert gc.get_threshold() == (700, 10, 10)
    gc.set_threshold(THRESHOLD * 2, 5, 5)
    with pytest.raises(RuntimeError) as inside:
        _fail_inside()
    assert inside.value.args == ((THRESHOLD * 2, 5, 5),)
    assert gc.get_threshold() == (THRESHOLD * 2, 5, 5)
