{#- SCD2: one row per customer version, from the snapshot of silver customers. -#}
with

snapshot as (
    select * from {{ ref('customers_snapshot') }}
),

final as (
    select
        dbt_scd_id as customer_sk,
        customer_id,
        customer_name_pseudonym,
        dbt_valid_from as valid_from,
        dbt_valid_to as valid_to,
        dbt_valid_to is null as is_current,
        row_number() over (partition by customer_id order by dbt_valid_from) as version_number
    from snapshot
)

select * from final
