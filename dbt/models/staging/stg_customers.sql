with

source as (
    select * from {{ source('silver', 'customers') }}
),

renamed as (
    select
        id as customer_id,
        name as customer_name_pseudonym,
        cast(_landing_date as timestamp) as delivered_at
    from source
)

select * from renamed
