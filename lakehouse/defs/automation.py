"""Automation: silver and gold follow bronze by themselves, one automation sensor, RUNNING.

`AutomationCondition.eager()` only considers the latest daily partition, so a late file for an
old date would stop at bronze. `follows_upstream()` is eager without that window: any partition
whose parents updated runs again, once nothing upstream is in progress and every blocking check
upstream passed.
"""

import dagster as dg

AUTOMATION_TICK_SECONDS = 15


def follows_upstream() -> dg.AutomationCondition:
    """Run a partition when a parent updated, nothing upstream runs, blocking checks passed."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("follows_upstream")


automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_TICK_SECONDS,
    description="Materializes silver and gold partitions whose upstream updated.",
)
