with

orders as (
    select * from {{ ref('stg_orders') }}
),

order_items as (
    select * from {{ ref('stg_order_items') }}
),

products as (
    select * from {{ ref('stg_products') }}
),

order_items_summary as (
    select
        order_items.order_id,
        count(*) as item_count,
        coalesce(sum(case when products.is_food_item then products.product_price end), 0) as food_subtotal,
        coalesce(sum(case when products.is_drink_item then products.product_price end), 0) as drink_subtotal
    from order_items
    left join products on order_items.product_id = products.product_id
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
