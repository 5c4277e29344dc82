{#- The one place an item meets its product: price at list, food or drink. fct_order_items and
    int_orders (hence the `orders` mart) read it. -#}
with

order_items as (
    select * from {{ ref('stg_order_items') }}
),

orders as (
    select order_id, store_id, customer_id, ordered_at, order_date from {{ ref('stg_orders') }}
),

products as (
    select * from {{ ref('stg_products') }}
),

final as (
    select
        order_items.order_item_id,
        order_items.order_id,
        order_items.product_id,
        orders.store_id,
        orders.customer_id,
        orders.ordered_at,
        orders.order_date,
        products.product_type,
        products.product_price,
        coalesce(products.is_food_item, false) as is_food_item,
        coalesce(products.is_drink_item, false) as is_drink_item
    from order_items
    inner join orders on order_items.order_id = orders.order_id
    left join products on order_items.product_id = products.product_id
)

select * from final
