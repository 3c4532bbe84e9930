"""Per-case partition sets. Training cases and cases to predict are separate
sets, so a scan meant for inference never enters training by accident."""
from dagster import DynamicPartitionsDefinition

training_cases = DynamicPartitionsDefinition(name="training_cases")
inference_cases = DynamicPartitionsDefinition(name="inference_cases")

