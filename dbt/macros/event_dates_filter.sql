{#- True when `column` (a date) lies in the run's partition range. The range is resolved at run
    time by the DuckDB macro the `silver` plugin defines from LAKEHOUSE_EVENT_DATES (every date
    when unset), so changing it never invalidates dbt's partial parse. -#}
{% macro event_dates_filter(column) -%}
    lakehouse_in_event_dates({{ column }})
{%- endmacro %}
