{#- True when `column` (a date) is one of the event dates the run rebuilds. The dates are resolved
    at run time by the DuckDB macro the `silver` plugin defines from LAKEHOUSE_EVENT_DATES (every
    date when unset), so changing them never invalidates dbt's partial parse. -#}
{% macro event_dates_filter(column) -%}
    lakehouse_in_event_dates({{ column }})
{%- endmacro %}
