{#- The config of a daily model: incremental by `date_column`, tagged `daily` (the gold assets
    partitioned by day). A run rebuilds exactly the event dates silver changed (the gold asset
    hands them to the `silver` plugin): the pre-hook empties those dates first, so a date whose
    every row was retracted leaves the model, and delete+insert on the date puts back what the
    run built. -#}
{% macro daily_incremental(date_column='order_date') %}
    {{ config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=date_column,
        tags=['daily'],
        pre_hook="{% if is_incremental() %}delete from {{ this }} where {{ event_dates_filter('" ~ date_column ~ "') }}{% endif %}",
    ) }}
{% endmacro %}
