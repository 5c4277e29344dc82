with

source as (
    select * from {{ source('silver', 'stores') }}
),

renamed as (
    select
        id as store_id,
        store_name,
        opened_at,
        tax_rate
    from source
)

select * from renamed
