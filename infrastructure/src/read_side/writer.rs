//! The projection's writes into the live tables: a batch's rows in one upsert a table, each
//! statement built from the table's columns.

use application::views::{CallProjection, CallView, TurnView};
use sqlx::query_builder::Separated;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::columns::{Cell, Table, CALLS, TURNS};

/// Rows per statement: fewer round trips, within PostgreSQL's 65,535 parameters (20 per turn).
const WRITE_CHUNK: usize = 2000;

/// Upserts `projections` (and the `turns` given) into the live tables, with the fold's state that
/// lets the projection go on from them.
pub(super) async fn write(
    conn: &mut PgConnection,
    projections: &[CallProjection],
    turns: &[&TurnView],
) -> Result<(), sqlx::Error> {
    let views: Vec<&CallView> = projections.iter().map(|p| &p.view).collect();
    upsert(&mut *conn, &CALLS, &views).await?;
    for chunk in projections.chunks(WRITE_CHUNK) {
        let mut q =
            QueryBuilder::<Postgres>::new("INSERT INTO call_projection_state (call_id, state) ");
        q.push_values(chunk, |mut row, p| {
            row.push_bind(p.view.call_id.as_uuid())
                .push_bind(sqlx::types::Json(p));
        });
        q.push(" ON CONFLICT (call_id) DO UPDATE SET state = EXCLUDED.state");
        q.build().execute(&mut *conn).await?;
    }
    upsert(conn, &TURNS, turns).await
}

/// Inserts `rows` into `table`, or updates every column but the key of the rows already there.
async fn upsert<V: Sync, R>(
    conn: &mut PgConnection,
    table: &Table<V, R>,
    rows: &[&V],
) -> Result<(), sqlx::Error> {
    let columns = table.names().collect::<Vec<_>>().join(", ");
    let updates = table
        .names()
        .filter(|name| !table.key.contains(name))
        .map(|name| format!("{name} = EXCLUDED.{name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let key = table.key.join(", ");
    for chunk in rows.chunks(WRITE_CHUNK) {
        let mut q =
            QueryBuilder::<Postgres>::new(format!("INSERT INTO {} ({columns}) ", table.name));
        q.push_values(chunk.iter().copied(), |mut row, view| {
            for column in table.columns {
                bind(&mut row, (column.write)(view));
            }
        });
        q.push(format!(" ON CONFLICT ({key}) DO UPDATE SET {updates}"));
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

fn bind<'args>(row: &mut Separated<'_, 'args, Postgres, &'static str>, cell: Cell<'args>) {
    match cell {
        Cell::Uuid(v) => row.push_bind(v),
        Cell::Text(v) => row.push_bind(v),
        Cell::Int(v) => row.push_bind(v),
        Cell::SmallInt(v) => row.push_bind(v),
        Cell::Bool(v) => row.push_bind(v),
        Cell::Time(v) => row.push_bind(v),
        Cell::Json(v) => row.push_bind(v.map(sqlx::types::Json)),
    };
}
