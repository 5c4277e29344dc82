with

stores as (
    select * from {{ ref('stg_stores') }}
),

final as (
    select
        store_id,
        store_name,
        opened_at,
        tax_rate
    from stores
)

select * from final
