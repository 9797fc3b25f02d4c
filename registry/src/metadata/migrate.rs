//! Moving a registry's metadata from SQLite (the embedded default) to
//! PostgreSQL (`berth admin migrate-metadata`), with the registry
//! stopped: every table copied row by row in one PostgreSQL transaction,
//! into a database that holds no registry yet, so a failure leaves it as
//! empty as it was. Columns are matched by name (`user` and `by` are
//! `username` and `by_whom` there) and values converted to the column's
//! PostgreSQL type; ids keep their values and the identity sequences
//! continue after them. The SQLite file is opened as `berth serve` opens
//! it (an older schema is brought up to date first) and then only read.

use std::path::Path;

use tokio_postgres::types::ToSql;

use super::postgres::client::Statements;
use super::{MetadataError, Postgres, Result, Sqlite};

/// Tables in an order that satisfies their foreign keys.
const TABLES: [&str; 22] = [
    "repositories",
    "blobs",
    "repository_blobs",
    "manifests",
    "tags",
    "uploads",
    "auth_projects",
    "auth_users",
    "auth_members",
    "auth_robots",
    "audit",
    "s3_blobs",
    "s3_uploads",
    "webhook_outbox",
    "manifest_refs",
    "gc_dirty",
    "blob_pieces",
    "project_policies",
    "ui_sessions",
    "job_runs",
    "login_failures",
    "berth_versions",
];

/// Rows copied, per table.
pub type Copied = Vec<(&'static str, u64)>;

/// A PostgreSQL column's name for a SQLite one.
fn pg_column(table: &str, column: &str) -> String {
    match (table, column) {
        (_, "user") => "username".to_owned(),
        ("job_runs", "by") => "by_whom".to_owned(),
        _ => column.to_owned(),
    }
}

/// A SQLite value as a parameter for a column of `pg_type`.
fn convert(
    v: rusqlite::types::Value,
    pg_type: &str,
    what: &str,
) -> Result<Box<dyn ToSql + Sync + Send>> {
    use rusqlite::types::Value;
    let bad = |v: &Value| MetadataError::Corrupt {
        what: "value to migrate",
        value: format!("{what}: {v:?} for a {pg_type} column"),
    };
    Ok(match (v, pg_type) {
        (Value::Null, "bigint") => Box::new(None::<i64>),
        (Value::Null, "boolean") => Box::new(None::<bool>),
        (Value::Null, "bytea") => Box::new(None::<Vec<u8>>),
        (Value::Null, _) => Box::new(None::<String>),
        (Value::Integer(i), "bigint") => Box::new(i),
        (Value::Integer(i), "boolean") => Box::new(i != 0),
        (Value::Text(t), "text") => Box::new(t),
        (Value::Blob(b), "bytea") => Box::new(b),
        (Value::Text(t), "bytea") => Box::new(t.into_bytes()),
        (v, _) => return Err(bad(&v)),
    })
}

/// Copy the metadata in the SQLite file `sqlite` into the (empty, or
/// freshly migrated) PostgreSQL database `pg`.
pub fn sqlite_to_postgres(sqlite: &Path, pg: &Postgres) -> Result<Copied> {
    if !sqlite.is_file() {
        return Err(MetadataError::Corrupt {
            what: "SQLite metadata file",
            value: format!("{} does not exist", sqlite.display()),
        });
    }
    // Opening migrates an old file to the current SQLite schema first.
    let source = Sqlite::open(sqlite)?;
    pg.write(|tx| {
        let held: i64 = tx.query_one("SELECT count(*) FROM repositories", &[])?.get(0);
        let accounts: i64 = tx.query_one("SELECT count(*) FROM auth_users", &[])?.get(0);
        if held > 0 || accounts > 0 {
            return Err(MetadataError::Corrupt {
                what: "target database",
                value: "it already holds a registry's metadata; migrate into an empty database".into(),
            });
        }
        // Made by the schema: replaced by the source's, where it has them.
        tx.execute("DELETE FROM berth_versions", &[])?;
        let mut copied = Vec::new();
        for table in TABLES {
            let columns: Vec<(String, String)> = tx
                .query(
                    "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1",
                    &[&table],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let conn = source.reader();
            let exists: bool = conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| Ok(r.get::<_, i64>(0)? > 0),
            )?;
            if !exists {
                continue;
            }
            let mut st = conn.prepare(&format!("SELECT * FROM {table}"))?;
            let names: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
            let targets: Vec<(String, String)> = names
                .iter()
                .map(|n| {
                    let pg = pg_column(table, n);
                    let ty = columns
                        .iter()
                        .find(|(c, _)| *c == pg)
                        .map(|(_, t)| t.clone())
                        .ok_or_else(|| MetadataError::Corrupt {
                            what: "column to migrate",
                            value: format!("{table}.{n} has no PostgreSQL column"),
                        })?;
                    Ok((pg, ty))
                })
                .collect::<Result<_>>()?;
            let identity = table_has_identity(table);
            let sql = format!(
                "INSERT INTO {table} ({}) {}VALUES ({})",
                targets.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(", "),
                if identity { "OVERRIDING SYSTEM VALUE " } else { "" },
                (1..=targets.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
            );
            let mut rows = st.query([])?;
            let mut n = 0u64;
            while let Some(row) = rows.next()? {
                let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(targets.len());
                for (i, (_, ty)) in targets.iter().enumerate() {
                    let v: rusqlite::types::Value = row.get(i)?;
                    params.push(convert(v, ty, &format!("{table}.{}", names[i]))?);
                }
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
                tx.execute(&sql, &refs)?;
                n += 1;
            }
            if identity {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}"
                    ),
                    &[],
                )?;
            }
            copied.push((table, n));
        }
        // A source too old to have versions: start them.
        tx.execute(
            "INSERT INTO berth_versions (what, version) VALUES ('accounts', 0), ('policies', 0)
             ON CONFLICT (what) DO NOTHING",
            &[],
        )?;
        Ok(copied)
    })
}

/// Whether `table`'s `id` is an identity column in PostgreSQL.
fn table_has_identity(table: &str) -> bool {
    matches!(table, "repositories" | "audit" | "webhook_outbox")
}
