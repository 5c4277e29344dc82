"""Automation: silver follows bronze by itself, one automation sensor, RUNNING.

`AutomationCondition.eager()` only considers the latest daily partition, so a late file for an
old date would stop at bronze. `follows_upstream()` is eager without that window: any partition
whose parents updated runs again, once nothing upstream is in progress. It does not wait for
upstream blocking checks: a silver step decides row by row (a row referencing a key held back
with a blocked date waits in bronze), so one blocked date never stops the others. Gold follows
silver's changed event dates through the gold sensor, not through automation.
"""

import dagster as dg

AUTOMATION_TICK_SECONDS = 15


def follows_upstream() -> dg.AutomationCondition:
    """Run a partition when a parent updated and nothing upstream (or itself) is running."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follows_upstream")


automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_TICK_SECONDS,
    description="Materializes silver partitions whose bronze (or referenced silver) updated.",
)
