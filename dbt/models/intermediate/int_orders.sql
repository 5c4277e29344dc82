{#- The one place an order's item totals are computed: the `orders` mart selects from it. -#}
with

orders as (
    select * from {{ ref('stg_orders') }}
),

order_items as (
    select * from {{ ref('int_order_items') }}
),

order_items_summary as (
    select
        order_id,
        count(*) as item_count,
        coalesce(sum(case when is_food_item then product_price end), 0) as food_subtotal,
        coalesce(sum(case when is_drink_item then product_price end), 0) as drink_subtotal
    from order_items
    group by 1
),

final as (
    select
        orders.order_id,
        orders.customer_id,
        orders.store_id,
        orders.ordered_at,
        orders.order_date,
        orders.subtotal,
        orders.tax_paid,
        orders.order_total,
        coalesce(order_items_summary.item_count, 0) as item_count,
        coalesce(order_items_summary.food_subtotal, 0) as food_subtotal,
        coalesce(order_items_summary.drink_subtotal, 0) as drink_subtotal,
        coalesce(order_items_summary.food_subtotal, 0) > 0 as is_food_order,
        coalesce(order_items_summary.drink_subtotal, 0) > 0 as is_drink_order
    from orders
    left join order_items_summary on orders.order_id = order_items_summary.order_id
)

select * from final
