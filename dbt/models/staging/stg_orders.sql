with

source as (
    select * from {{ source('silver', 'orders') }}
),

renamed as (
    select
        id as order_id,
        customer_id,
        store_id,
        ordered_at,
        cast(ordered_at as date) as order_date,
        subtotal,
        tax_paid,
        order_total
    from source
)

select * from renamed
