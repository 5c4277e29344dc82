{#- Daily (`daily_incremental`): a run rebuilds exactly the order dates silver changed. Silver
    records an item's changes at its order's date (the items contract's `dated_by`), so a late
    item, or one moved to another order, rebuilds the days of the orders it belongs to. -#}
{{ daily_incremental('order_date') }}
{#- Its tests read these: built before the fact in a run that rebuilds them. -#}
-- depends_on: {{ ref('dim_products') }}, {{ ref('dim_stores') }}, {{ ref('dim_dates') }}

with

order_items as (
    select * from {{ ref('int_order_items') }}
    where {{ event_dates_filter('order_date') }}
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
