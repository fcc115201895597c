//! sqlx errors as coolmq errors: kind `Database`, temporary when retrying can help.

use coolmq_core::{Error, ErrorKind};

/// Map a sqlx error met while doing `what`.
pub(crate) fn db(e: sqlx::Error, what: &str) -> Error {
    let temporary = matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_)
    ) || matches!(&e, sqlx::Error::Database(d) if d.message().contains("database is locked"));
    Error::new(ErrorKind::Database, format!("{what}: {e}"))
        .set_temporary(temporary)
        .with_source(e)
}
