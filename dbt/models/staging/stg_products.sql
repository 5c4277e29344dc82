with

source as (
    select * from {{ source('silver', 'products') }}
),

renamed as (
    select
        sku as product_id,
        product_name,
        product_type,
        price as product_price,
        product_type = 'jaffle' as is_food_item,
        product_type = 'beverage' as is_drink_item
    from source
)

select * from renamed
