{#- Every calendar day from the first to the last order date silver holds (today alone before the
    first order): the facts' date dimension and MetricFlow's time spine. -#}
with

bounds as (
    select
        coalesce(min(order_date), current_date) as first_day,
        coalesce(max(order_date), current_date) as last_day
    from {{ ref('stg_orders') }}
),

days as (
    select cast(unnest(generate_series(first_day, last_day, interval 1 day)) as date) as date_day
    from bounds
),

final as (
    select
        date_day,
        cast(date_trunc('week', date_day) as date) as week_start_date,
        cast(date_trunc('month', date_day) as date) as month_start_date,
        extract(year from date_day) as year_number,
        extract(isodow from date_day) as day_of_week,
        dayname(date_day) as day_name,
        extract(isodow from date_day) >= 6 as is_weekend
    from days
)

select * from final
