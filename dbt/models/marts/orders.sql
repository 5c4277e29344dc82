{#- One row per order with its item totals: the order logic lives in int_orders. Daily
    (`daily_incremental`), like the facts: a run rebuilds exactly the order dates silver changed,
    an item's change included (its order's date). -#}
{{ daily_incremental('order_date') }}

select * from {{ ref('int_orders') }}
where {{ event_dates_filter('order_date') }}
