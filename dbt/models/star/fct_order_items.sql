{#- Whole: silver items carry no event date, so a change to them rebuilds this fact whole. -#}
with

order_items as (
    select * from {{ ref('int_order_items') }}
),

final as (
    select
        order_item_id,
        order_id,
        product_id,
        store_id,
        customer_id,
        ordered_at,
        order_date,
        product_type,
        product_price,
        is_food_item,
        is_drink_item
    from order_items
)

select * from final
