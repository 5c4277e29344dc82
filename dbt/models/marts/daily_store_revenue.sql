with

orders as (
    select * from {{ ref('stg_orders') }}
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
