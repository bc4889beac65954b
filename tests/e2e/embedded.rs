//! The embedded PostgreSQL the service starts when no DATABASE_URL is given.

use std::os::unix::fs::PermissionsExt;

use infrastructure::embedded_pg::EmbeddedPostgres;
use infrastructure::event_store;
use sqlx::{ConnectOptions, Connection};

#[tokio::test]
async fn the_embedded_database_starts_migrates_stops_and_starts_again() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // As root the cluster runs as an unprivileged account, which must be able to reach it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data_dir = dir.path().join("data");

    let pg = EmbeddedPostgres::start(&data_dir)
        .await
        .expect("starts on a fresh directory");
    let pool = event_store::pool(pg.connect_options(), 2);
    event_store::migrate(&pool).await.expect("migrates");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'",
    )
    .fetch_one(&pool)
    .await
    .expect("queries");
    assert_eq!(tables, 1);
    pool.close().await;
    pg.stop().await.expect("stops");

    // The server is gone…
    let gone = EmbeddedPostgres::start(&data_dir)
        .await
        .expect("starts again on the same cluster");
    // …and the data survived the restart.
    let mut conn = gone.connect_options().connect().await.expect("connects");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("queries");
    assert!(applied >= 1);
    conn.close().await.expect("closes");
    gone.stop().await.expect("stops");
}
