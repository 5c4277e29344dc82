{% macro drop_silver_views() %}
    {% if execute %}
        {% set drops = [] %}
        {% for node in graph.sources.values() if node.source_name == 'silver' %}
            {% do drops.append("drop view if exists " ~ node.schema ~ "." ~ node.identifier) %}
        {% endfor %}
        {# one statement list: each run_query costs dbt a connection round of its own #}
        {% if drops %}{% do run_query(drops | join(";\n")) %}{% endif %}
    {% endif %}
{% endmacro %}
