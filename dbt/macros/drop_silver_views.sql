{% macro drop_silver_views() %}
    {% if execute %}
        {% for node in graph.sources.values() if node.source_name == 'silver' %}
            {% do run_query("drop view if exists " ~ node.schema ~ "." ~ node.identifier) %}
        {% endfor %}
    {% endif %}
{% endmacro %}
