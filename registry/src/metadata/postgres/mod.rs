//! The PostgreSQL metadata store, for several registry replicas sharing
//! one database: the same contract as [`super::Sqlite`], over a pool of
//! connections whose I/O runs on the store's own runtime and whose calls
//! block the caller ([`client`]), so it is called exactly as the SQLite
//! store is. Writes run in `SERIALIZABLE` transactions and are
//! retried when PostgreSQL reports a serialization failure or deadlock, so
//! every multi-row change is as isolated as under SQLite's single writer —
//! the guarantee the GC's safety argument and the tag, immutability and
//! quota checks rely on — while replicas write concurrently. The schema is
//! versioned in `berth_schema` and migrated at start-up under an advisory
//! lock, so replicas starting together migrate once. A connection that
//! breaks (PostgreSQL restarted, the network gone) is dropped and the next
//! call connects again; while PostgreSQL cannot be reached, calls fail
//! with [`MetadataError::Unavailable`] and nothing is half-written.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::error::SqlState;

use self::client::{Client, Statements, Transaction};
use super::{MetadataError, Result};
use crate::storage::UploadId;

mod accounts;
mod browse;
pub(super) mod client;
mod content;
mod gc;
mod queues;
mod s3;
mod schema;
mod small;

/// Connections a store keeps at most.
const DEFAULT_POOL: usize = 16;

/// How many times a write retries after a serialization failure.
const RETRIES: u32 = 20;

/// The advisory lock migrations hold (any constant the registry owns).
const MIGRATION_LOCK: i64 = 0x6265_7274_685f_6d69; // "berth_mi"

/// The PostgreSQL metadata store.
pub struct Postgres {
    config: tokio_postgres::Config,
    /// Where the connections' I/O runs (shut down with the store).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Arc<Pool>,
    /// Connections that hold advisory locks, apart from `pool`: a replica
    /// publishing under a gate stripe holds one of these while it links
    /// the blob with one of `pool`'s, so locks can never use up the
    /// connections the work under them needs.
    lock_pool: Arc<Pool>,
    /// The one connection holding every upload claim of this replica (an
    /// advisory lock each, many on one session), opened when first needed
    /// and again after it breaks.
    claims: Mutex<Option<Arc<Client>>>,
}

/// The connections, shared with those lent out (a lock guard keeps its
/// connection for as long as it holds the lock).
struct Pool {
    /// One permit per connection the pool may open, handed out first come
    /// first served: a taker waits its turn, never barged past by later
    /// ones (a condition variable wakes an arbitrary waiter, and under 64
    /// concurrent GETs some waited hundreds of milliseconds).
    permits: Arc<tokio::sync::Semaphore>,
    state: Mutex<PoolState>,
    max: usize,
}

struct PoolState {
    idle: Vec<Client>,
    /// Connections open (idle or lent).
    open: usize,
}

impl Pool {
    /// A connection is gone for good (it broke): room for a new one.
    fn forget_one(&self) {
        lock(&self.state).open -= 1;
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("host", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("max", &self.pool.max)
            .finish()
    }
}

/// A connection lent by the pool; given back when dropped unless it broke.
struct Conn {
    pool: Arc<Pool>,
    client: Option<Client>,
    /// Its turn in the pool, given back after the connection.
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// It was idle in the pool: it may have broken since (PostgreSQL
    /// restarted), which only its first use tells.
    reused: bool,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropped anywhere, an async task included: never block here.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("a lent connection")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("a lent connection")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if client.is_closed() {
            self.pool.forget_one();
        } else {
            lock(&self.pool.state).idle.push(client);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `e` says the transaction lost a race and may simply run again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

impl From<tokio_postgres::Error> for MetadataError {
    /// A lost connection, a server shutting down or not yet accepting
    /// (SQLSTATE classes 08 and 57P), or an error with no SQLSTATE at all
    /// (I/O) is [`MetadataError::Unavailable`]; anything else PostgreSQL
    /// said about a statement is [`MetadataError::Postgres`].
    fn from(e: tokio_postgres::Error) -> Self {
        let gone = match e.code() {
            None => true,
            Some(code) => {
                let code = code.code();
                code.starts_with("08") || code.starts_with("57P")
            }
        };
        if e.is_closed() || gone {
            MetadataError::Unavailable(e.to_string())
        } else {
            MetadataError::Postgres(e)
        }
    }
}

impl Postgres {
    /// Connect to `url` (`postgres://user[:password]@host[:port]/db`),
    /// migrating its schema to this berth's.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, None, DEFAULT_POOL)
    }

    /// A new, empty database made on the server `url` points at (through
    /// that database), opened: for tests, each of which gets its own.
    pub fn fresh_database(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            MetadataError::Unavailable(format!("{url:?}: {e}"))
        })?;
        let name = format!("berth_{}", uuid::Uuid::new_v4().simple());
        let admin = Self::open_config(config.clone(), 1, false)?;
        admin
            .conn()?
            .batch_execute(&format!("CREATE DATABASE {name}"))?;
        drop(admin);
        let mut config = config;
        config.dbname(&name);
        Self::open_config(config, DEFAULT_POOL, true)
    }

    /// Whether the database at `url` can be reached and holds no schema
    /// newer than this berth's (`berth serve --check-config`): connects,
    /// reads, changes nothing.
    pub fn probe(url: &str, password: Option<&str>) -> Result<()> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                MetadataError::Unavailable(format!("{url:?}: {e}"))
            })?;
        if let Some(p) = password {
            config.password(p);
        }
        let store = Self::open_config(config, 1, false)?;
        let c = store.conn()?;
        let known = c
            .query_opt("SELECT to_regclass('berth_schema')::TEXT", &[])?
            .and_then(|r| r.get::<_, Option<String>>(0));
        if known.is_some() {
            if let Some(row) = c.query_opt("SELECT version FROM berth_schema", &[])? {
                let found: i64 = row.get(0);
                if found > schema::VERSION {
                    return Err(MetadataError::TooNew {
                        found,
                        known: schema::VERSION,
                    });
                }
            }
        }
        Ok(())
    }

    /// `url` for a log line: `PostgreSQL host:port/database`, never a
    /// password.
    pub fn describe(url: &str) -> String {
        let Ok(config) = url.parse::<tokio_postgres::Config>() else {
            return "PostgreSQL (an unreadable URL)".to_owned();
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, p)| match h {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        format!(
            "PostgreSQL {}/{}",
            hosts.join(","),
            config.get_dbname().unwrap_or("")
        )
    }

    /// [`Postgres::open`] with `password` (if the URL holds none) and at
    /// most `max` connections.
    pub fn open_with(url: &str, password: Option<&str>, max: usize) -> Result<Self> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                MetadataError::Unavailable(format!("{url:?}: {e}"))
            })?;
        if let Some(p) = password {
            config.password(p);
        }
        Self::open_config(config, max, true)
    }

    fn open_config(mut config: tokio_postgres::Config, max: usize, migrate: bool) -> Result<Self> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("berth");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("berth-postgres")
            .enable_all()
            .build()
            .map_err(|e| MetadataError::Unavailable(format!("cannot start its I/O thread: {e}")))?;
        let store = Self {
            config,
            runtime: Some(runtime),
            pool: Arc::new(Pool {
                permits: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                }),
                max: max.max(1),
            }),
            lock_pool: Arc::new(Pool {
                permits: Arc::new(tokio::sync::Semaphore::new(LOCK_POOL)),
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                }),
                max: LOCK_POOL,
            }),
            claims: Mutex::new(None),
        };
        if migrate {
            let mut c = store.conn()?;
            schema::migrate(&mut c, MIGRATION_LOCK)?;
        }
        Ok(store)
    }

    /// A connection: an idle one, a new one while under the limit, or the
    /// next one given back.
    fn conn(&self) -> Result<Conn> {
        self.conn_from(&self.pool)
    }

    /// A connection of `pool` (see [`Postgres::conn`]).
    fn conn_from(&self, pool: &Arc<Pool>) -> Result<Conn> {
        // With a permit, an idle connection is there or there is room to
        // open one: every lent connection holds a permit.
        let permit = client::block_on(pool.permits.clone().acquire_owned())
            .expect("the pool's semaphore is never closed");
        let mut state = lock(&pool.state);
        while let Some(client) = state.idle.pop() {
            if client.is_closed() {
                state.open -= 1;
                continue;
            }
            return Ok(Conn {
                pool: pool.clone(),
                client: Some(client),
                _permit: permit,
                reused: true,
            });
        }
        state.open += 1;
        drop(state);
        let rt = self.runtime.as_ref().expect("the store's runtime").handle();
        match client::connect(rt, &self.config) {
            Ok(client) => Ok(Conn {
                pool: pool.clone(),
                client: Some(client),
                _permit: permit,
                reused: false,
            }),
            Err(e) => {
                pool.forget_one();
                Err(MetadataError::Unavailable(e.to_string()))
            }
        }
    }

    /// Run `f` with a connection (reads: each statement on its own). A
    /// pooled connection found broken is replaced once.
    fn read<T>(&self, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        loop {
            let mut c = self.conn()?;
            match f(&mut c) {
                Err(MetadataError::Unavailable(_)) if c.reused && c.is_closed() => continue,
                other => return other,
            }
        }
    }

    /// Run `f` on one consistent snapshot (a `REPEATABLE READ` read-only
    /// transaction): reads that must agree with each other, such as a
    /// collection's plan.
    fn snapshot<T>(&self, f: impl FnMut(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.transaction("ISOLATION LEVEL REPEATABLE READ READ ONLY", true, f)
    }

    /// Run `f` in a transaction that is rolled back: what a change would
    /// do, seen from inside, without making it.
    fn rolled_back<T>(&self, f: impl FnMut(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.transaction("ISOLATION LEVEL REPEATABLE READ", false, f)
    }

    /// Run `f` in a `SERIALIZABLE` transaction and commit.
    pub(super) fn write<T>(&self, f: impl FnMut(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.transaction("ISOLATION LEVEL SERIALIZABLE", true, f)
    }

    /// Run `f` in a transaction begun with `mode`, then commit it (`keep`)
    /// or roll it back — again from the start when PostgreSQL says it lost
    /// a race with another transaction, or when a pooled connection turns
    /// out to have broken (nothing was done on it).
    fn transaction<T>(
        &self,
        mode: &str,
        keep: bool,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            let mut c = self.conn()?;
            let reused = c.reused;
            let outcome = (|| {
                let mut tx = c.begin(mode)?;
                let value = f(&mut tx)?;
                if keep {
                    tx.commit()?;
                } else {
                    tx.rollback()?;
                }
                Ok(value)
            })();
            match outcome {
                Err(MetadataError::Unavailable(_)) if reused && c.is_closed() => {}
                Err(MetadataError::Postgres(e)) if retryable(&e) && attempt < RETRIES => {
                    attempt += 1;
                    // Back off a little, more each time, so racing writers
                    // stop colliding.
                    std::thread::sleep(Duration::from_millis(
                        u64::from(attempt) * (1 + rand::random::<u64>() % 5),
                    ));
                }
                other => return other,
            }
        }
    }
}

/// Connections holding advisory locks at most: the 64 gate stripes can
/// be held at once (shared locks of concurrent uploads share nothing
/// else), plus the jobs.
const LOCK_POOL: usize = 72;

/// The advisory locks of the blob gate's stripes: this plus the stripe.
const GATE_LOCKS: i64 = 0x6265_7274_6800_0000; // "berth\0\0\0"

/// The advisory lock of job `job`.
fn job_key(job: &str) -> i64 {
    // FNV-1a, folded into the registry's own range.
    let h = job.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    0x6265_7274_6a00_0000 | (h & 0xff_ffff) as i64 // "berthj…"
}

/// The advisory lock of upload session `id`: its last 8 bytes (random in
/// a v4 UUID) as the two-key form, whose key space PostgreSQL keeps apart
/// from the one-key form of the gate and the jobs.
fn upload_key(id: UploadId) -> (i32, i32) {
    let b = id.bytes();
    (
        i32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        i32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    )
}

/// An upload claim: an advisory lock on the replica's claims connection.
struct UploadClaim {
    client: Arc<Client>,
    key: (i32, i32),
}

impl Drop for UploadClaim {
    fn drop(&mut self) {
        // A broken connection took its locks with it.
        if !self.client.is_closed() {
            let _ = self.client.execute(
                "SELECT pg_advisory_unlock($1, $2)",
                &[&self.key.0, &self.key.1],
            );
        }
    }
}

/// A session-level advisory lock, held on its own connection until
/// dropped (if that connection breaks, PostgreSQL lets go of it).
struct Advisory {
    conn: Conn,
    key: i64,
    shared: bool,
}

impl Drop for Advisory {
    fn drop(&mut self) {
        let unlock = if self.shared {
            "SELECT pg_advisory_unlock_shared($1)"
        } else {
            "SELECT pg_advisory_unlock($1)"
        };
        if self.conn.execute(unlock, &[&self.key]).is_err() {
            // Unknown state: never give this connection back.
            self.conn.client.take();
            self.conn.pool.forget_one();
        }
    }
}

impl super::Coordination for Postgres {
    fn remote(&self) -> bool {
        true
    }

    fn ping(&self) -> Result<()> {
        self.read(|c| {
            c.batch_execute("SELECT 1")?;
            Ok(())
        })
    }

    fn version(&self, what: super::Versioned) -> Result<Option<i64>> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT version FROM berth_versions WHERE what = $1",
                &[&what.key()],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn gate_stripe(&self, stripe: usize, exclusive: bool) -> Result<super::LockGuard> {
        let key = GATE_LOCKS + stripe as i64;
        let conn = self.conn_from(&self.lock_pool)?;
        let sql = if exclusive {
            "SELECT pg_advisory_lock($1)"
        } else {
            "SELECT pg_advisory_lock_shared($1)"
        };
        conn.execute(sql, &[&key])?;
        Ok(super::LockGuard::holding(Advisory {
            conn,
            key,
            shared: !exclusive,
        }))
    }

    fn claim_upload(&self, id: UploadId) -> Result<Option<super::LockGuard>> {
        let client = {
            let mut slot = lock(&self.claims);
            match slot.as_ref() {
                Some(c) if !c.is_closed() => c.clone(),
                _ => {
                    let rt = self.runtime.as_ref().expect("the store's runtime").handle();
                    let c = Arc::new(
                        client::connect(rt, &self.config)
                            .map_err(|e| MetadataError::Unavailable(e.to_string()))?,
                    );
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        let key = upload_key(id);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&key.0, &key.1])?
            .get(0);
        Ok(got.then(|| super::LockGuard::holding(UploadClaim { client, key })))
    }

    fn try_job(&self, job: &str) -> Result<Option<super::LockGuard>> {
        let key = job_key(job);
        let conn = self.conn_from(&self.lock_pool)?;
        let got: bool = conn
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .get(0);
        Ok(got.then(|| {
            super::LockGuard::holding(Advisory {
                conn,
                key,
                shared: false,
            })
        }))
    }
}

/// Record in `tx` that `what` changed, so other replicas reload it.
fn bump(tx: &mut Transaction<'_>, what: super::Versioned) -> Result<()> {
    tx.execute(
        "UPDATE berth_versions SET version = version + 1 WHERE what = $1",
        &[&what.key()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_tests::postgres::PgServer;

    #[test]
    fn migrates_once_and_survives_a_restart_of_postgres() {
        let mut pg = PgServer::start();
        let url = pg.database();
        // Two stores opening at once migrate once (the advisory lock).
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| Postgres::open(&url).unwrap());
            let b = s.spawn(|| Postgres::open(&url).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        let version: i64 = a
            .conn()
            .unwrap()
            .query_one("SELECT version FROM berth_schema", &[])
            .unwrap()
            .get(0);
        assert_eq!(version, schema::VERSION);
        drop(b);
        // PostgreSQL restarts: the pooled connection is broken, found so on
        // its first use, and replaced; the caller sees no error.
        pg.restart();
        let n: i32 = a
            .read(|c| Ok(c.query_one("SELECT 1", &[])?.get(0)))
            .unwrap();
        assert_eq!(n, 1);
        pg.restart();
        let n = a
            .write(|tx| Ok(tx.execute("CREATE TEMP TABLE t (x int)", &[])?))
            .unwrap();
        assert_eq!(n, 0);
        // Stopped: calls fail as unavailable, quickly.
        pg.stop();
        let started = std::time::Instant::now();
        let err = a.write(|tx| Ok(tx.execute("SELECT 1", &[])?)).unwrap_err();
        assert!(matches!(err, MetadataError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
