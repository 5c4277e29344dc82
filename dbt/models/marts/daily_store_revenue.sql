{#- Daily partitioned: a run rebuilds only the order dates of its partition range. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_date',
        tags=['daily'],
    )
}}

with

orders as (
    select * from {{ ref('stg_orders') }}
    where {{ event_dates_filter('order_date') }}
),

final as (
    select
        store_id,
        order_date,
        count(*) as order_count,
        sum(order_total) as revenue
    from orders
    group by 1, 2
)

select * from final
