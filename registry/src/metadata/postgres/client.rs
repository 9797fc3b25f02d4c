//! A synchronous face on `tokio-postgres` that works on any thread. The
//! connections' I/O runs on the store's own small runtime; a call waits
//! for its answer by parking the calling thread, which needs no runtime
//! at all — so the store, like the SQLite one, may be called from the
//! blocking pool, from a plain thread, or (for short reads) from an async
//! task, without "a runtime within a runtime". Transactions are explicit
//! `BEGIN … COMMIT` on one connection. Each connection keeps the
//! statements it prepared, so a query is parsed and planned once per
//! connection and then costs one round trip.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, NoTls, Row, Statement};

/// Statements a connection keeps prepared at most (the registry's are a
/// fixed set, plus the audit filter's combinations).
const STATEMENTS: usize = 512;

/// Wakes the thread that waits.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Run `f` to completion on this thread, parking between polls.
pub(in crate::metadata) fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// One connection.
pub(in crate::metadata) struct Client {
    inner: tokio_postgres::Client,
    prepared: Mutex<HashMap<String, Statement>>,
}

/// Connect with `config`, the connection's I/O running on `rt`.
pub(in crate::metadata) fn connect(
    rt: &tokio::runtime::Handle,
    config: &tokio_postgres::Config,
) -> std::result::Result<Client, Error> {
    let config = config.clone();
    let (client, connection) = block_on(rt.spawn(async move { config.connect(NoTls).await }))
        .expect("the connecting task is not cancelled")?;
    rt.spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(Client {
        inner: client,
        prepared: Mutex::new(HashMap::new()),
    })
}

/// Statements, on a connection or inside one of its transactions.
pub(in crate::metadata) trait Statements {
    fn connection(&self) -> &Client;

    /// `sql` prepared on this connection (once).
    fn prepared(&self, sql: &str) -> std::result::Result<Statement, Error> {
        let c = self.connection();
        if let Some(st) = lock(&c.prepared).get(sql) {
            return Ok(st.clone());
        }
        let st = block_on(c.inner.prepare(sql))?;
        let mut cache = lock(&c.prepared);
        if cache.len() >= STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    /// Every row `sql` returns.
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, Error> {
        let st = self.prepared(sql)?;
        block_on(self.connection().inner.query(&st, params))
    }

    /// The one row `sql` returns.
    fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Row, Error> {
        let st = self.prepared(sql)?;
        block_on(self.connection().inner.query_one(&st, params))
    }

    /// The row `sql` returns, if any.
    fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, Error> {
        let st = self.prepared(sql)?;
        block_on(self.connection().inner.query_opt(&st, params))
    }

    /// How many rows `sql` changed.
    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, Error> {
        let st = self.prepared(sql)?;
        block_on(self.connection().inner.execute(&st, params))
    }

    /// Run statements without parameters (not prepared: DDL, BEGIN, …).
    fn batch_execute(&self, sql: &str) -> std::result::Result<(), Error> {
        block_on(self.connection().inner.batch_execute(sql))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Statements for Client {
    fn connection(&self) -> &Client {
        self
    }
}

impl Client {
    /// Whether the connection has ended (the server went away).
    pub(in crate::metadata) fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Begin a transaction with `mode` (`ISOLATION LEVEL SERIALIZABLE`, …).
    pub(in crate::metadata) fn begin(
        &mut self,
        mode: &str,
    ) -> std::result::Result<Transaction<'_>, Error> {
        self.batch_execute(&format!("BEGIN {mode}"))?;
        Ok(Transaction {
            client: self,
            open: true,
        })
    }
}

/// A transaction: rolled back when dropped unless committed.
pub(in crate::metadata) struct Transaction<'a> {
    client: &'a mut Client,
    open: bool,
}

impl Statements for Transaction<'_> {
    fn connection(&self) -> &Client {
        self.client
    }
}

impl Transaction<'_> {
    pub(in crate::metadata) fn commit(mut self) -> std::result::Result<(), Error> {
        self.open = false;
        self.client.batch_execute("COMMIT")
    }

    pub(in crate::metadata) fn rollback(mut self) -> std::result::Result<(), Error> {
        self.open = false;
        self.client.batch_execute("ROLLBACK")
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open && !self.client.is_closed() {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }
}
