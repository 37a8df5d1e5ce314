"""botocore's data files read by the orjson loader equal what botocore's own loader reads."""

from __future__ import annotations

import pytest
from botocore.session import Session

from scanner.storage.s3.models import use_fast_data_loader


@pytest.mark.parametrize(
    ("load", "name"),
    [
        ("load_service_model", ("s3", "service-2")),
        ("load_service_model", ("s3", "endpoint-rule-set-1")),
        ("load_service_model", ("s3", "paginators-1")),
        ("load_data", ("endpoints",)),
        ("load_data", ("partitions",)),
        ("load_data", ("sdk-default-configuration",)),
        ("load_data", ("_retry",)),
    ],
)
def test_same_data_as_botocore(load: str, name: tuple[str, ...]) -> None:
    fast = Session()
    use_fast_data_loader(fast)
    plain = Session()
    ours = getattr(fast.get_component("data_loader"), load)(*name)
    theirs = getattr(plain.get_component("data_loader"), load)(*name)
    assert ours == theirs
    assert type(ours) is dict  # orjson's, not json's OrderedDict: the loader in use is ours


def test_the_order_of_members_is_kept() -> None:
    """Shapes list their members in the model's order (botocore serializes in that order)."""
    fast = Session()
    use_fast_data_loader(fast)
    plain = Session()
    ours = fast.get_service_model("s3").operation_model("ListObjectsV2").input_shape
    theirs = plain.get_service_model("s3").operation_model("ListObjectsV2").input_shape
    assert list(ours.members) == list(theirs.members)
