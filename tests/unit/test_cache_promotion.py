"""Reading INFO replication for a primary promoted since it started."""

from __future__ import annotations

import pytest

from server.cache.redis import _promoted

pytestmark = pytest.mark.unit


def test_an_all_zero_replid2_is_a_primary_never_promoted() -> None:
    # redis-py reads "0000000000000000000000000000000000000000" as the int 0.
    assert not _promoted({"role": "master", "master_replid2": 0, "second_repl_offset": -1})


@pytest.mark.parametrize(
    "replid2",
    ["86df6dc282ae75153bdfd3c767f4b81d6121828e", 1234567890123456789012345678901234567890],
)
def test_an_old_primarys_replication_id_is_a_promotion(replid2: object) -> None:
    # An id of digits alone reaches us as an int.
    assert _promoted({"role": "master", "master_replid2": replid2})


def test_an_answer_without_replid2_cannot_tell() -> None:
    with pytest.raises(ValueError, match="master_replid2"):
        _promoted({"role": "master"})
