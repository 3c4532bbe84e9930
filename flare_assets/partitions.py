"""Per-case partition sets. Training cases and cases to predict are separate
sets, so a scan meant for inference never enters training by accident."""
from dagster import DynamicPartitionsDefinition

training_cases = DynamicPartitionsDefinition(name="training_cases")
inference_cases = DynamicPartitionsDefinition(name="inference_cases")


# Dagster's documented run tags that make one run cover a range of partitions
# (what a backfill launches); spelled out because Dagster exports no public constant.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags for one run over the partitions first..last (in the definition's order)."""
    return {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}
