{#- True when `column` (a date) is one of the event dates the run rebuilds. The dates are resolved
    at run time by the DuckDB macro the `silver` plugin defines from the run's event dates (every
    date when there are none), so changing them never invalidates dbt's partial parse. -#}
{% macro event_dates_filter(column) -%}
    lakehouse_in_event_dates({{ column }})
{%- endmacro %}
