{#- One row per customer (their current version) with their order history in aggregate (orders
    alone: an item's change does not rebuild it). -#}
with

customers as (
    select * from {{ ref('dim_customers') }}
    where is_current
),

orders as (
    select * from {{ ref('stg_orders') }}
),

customer_orders as (
    select
        customer_id,
        min(ordered_at) as first_ordered_at,
        max(ordered_at) as last_ordered_at,
        count(*) as order_count,
        sum(order_total) as lifetime_spend
    from orders
    group by 1
),

final as (
    select
        customers.customer_id,
        customers.customer_name_pseudonym,
        customer_orders.first_ordered_at,
        customer_orders.last_ordered_at,
        cast(customer_orders.first_ordered_at as date) as first_order_date,
        coalesce(customer_orders.order_count, 0) as order_count,
        coalesce(customer_orders.lifetime_spend, 0) as lifetime_spend,
        coalesce(customer_orders.order_count, 0) > 1 as is_repeat_buyer
    from customers
    left join customer_orders on customers.customer_id = customer_orders.customer_id
)

select * from final
