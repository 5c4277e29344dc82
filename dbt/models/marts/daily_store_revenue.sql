{#- Daily: a run rebuilds exactly the order dates silver changed (LAKEHOUSE_EVENT_DATES). The
    pre-hook empties those dates first, so a date whose every order was retracted leaves the mart. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_date',
        tags=['daily'],
        pre_hook="{% if is_incremental() %}delete from {{ this }} where {{ event_dates_filter('order_date') }}{% endif %}",
    )
}}

with

orders as (
    select * from {{ ref('fct_orders') }}
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
