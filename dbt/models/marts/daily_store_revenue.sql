{#- Daily (`daily_incremental`): a run rebuilds exactly the order dates silver changed. -#}
{{ daily_incremental('order_date') }}

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
