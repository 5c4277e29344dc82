{#- History of silver customers: a changed name (its pseudonym) in a new delivery closes the
    customer's current version and opens a new one. Versions are timed by the landing date that
    brought them (`delivered_at`), so they follow the data, not the time dbt ran; dim_customers
    reads this. -#}
{% snapshot customers_snapshot %}
{{
    config(
        unique_key='customer_id',
        strategy='check',
        check_cols=['customer_name_pseudonym'],
        updated_at='delivered_at',
    )
}}

select * from {{ ref('stg_customers') }}

{% endsnapshot %}
