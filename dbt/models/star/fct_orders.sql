{#- Daily: a run rebuilds exactly the order dates silver changed (LAKEHOUSE_EVENT_DATES). The
    pre-hook empties those dates first, so a date whose every order was retracted leaves the fact.
    `customer_sk` is the customer's version at order time (the first version also covers orders
    placed before it was delivered). -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='order_date',
        tags=['daily'],
        pre_hook="{% if is_incremental() %}delete from {{ this }} where {{ event_dates_filter('order_date') }}{% endif %}",
    )
}}

with

orders as (
    select * from {{ ref('stg_orders') }}
    where {{ event_dates_filter('order_date') }}
),

customers as (
    select * from {{ ref('dim_customers') }}
),

final as (
    select
        orders.order_id,
        customers.customer_sk,
        orders.customer_id,
        orders.store_id,
        orders.ordered_at,
        orders.order_date,
        orders.subtotal,
        orders.tax_paid,
        orders.order_total
    from orders
    left join customers
        on orders.customer_id = customers.customer_id
        and (orders.ordered_at >= customers.valid_from or customers.version_number = 1)
        and (customers.valid_to is null or orders.ordered_at < customers.valid_to)
)

select * from final
