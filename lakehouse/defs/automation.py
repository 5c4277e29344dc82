"""Automation: silver follows bronze by itself, one automation sensor, RUNNING.

`AutomationCondition.eager()` only considers the latest daily partition, so a late file for an
old date would stop at bronze. `follows_upstream()` is eager without that window: any partition
whose parents updated runs again, once nothing upstream is in progress. It does not wait for
upstream blocking checks: a silver step decides row by row (a row referencing a key held back
with a blocked date waits in bronze), so one blocked date never stops the others. Gold follows
silver's changed event dates in the landing sensor's runs and through the gold sensor, not
through automation.

The landing sensor's runs load silver right after bronze: a bronze partition such a run updated
is silver's already (published, or held back with a blocked date), so it pulls nothing more; a
silver table referencing the source's silver follows as usual.
"""

import dagster as dg

AUTOMATION_TICK_SECONDS = 15

LANDING_RUN = {"lakehouse/trigger": "landing_sensor"}
"""Tags of the landing sensor's runs (bronze, then silver, of the sources they load)."""


def follows_upstream() -> dg.AutomationCondition:
    """Run a partition when a parent updated and nothing upstream (or itself) is running."""
    bronze = dg.AssetSelection.groups("bronze")
    bronze_loaded_alone = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.newly_updated()
        & ~dg.AutomationCondition.executed_with_tags(tag_values=LANDING_RUN)
    ).allow(bronze)
    parent_updated = (
        bronze_loaded_alone | dg.AutomationCondition.any_deps_updated().ignore(bronze)
    ).with_label("parent_updated")
    return (
        parent_updated.since_last_handled()
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
