{#- One row per order with its item totals: the order logic lives in int_orders. -#}
select * from {{ ref('int_orders') }}
