//! The writer of the PostgreSQL store: one task that takes every write waiting in its
//! queue and applies them in one transaction, answering each only after COMMIT (the
//! group commit of the SQLite store), and that claims ids race-free across replicas.

use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::{SELECT_BY_ID, listen, row_to_record, unavailable};
use crate::ids::LinkId;
use crate::store::{IdPlan, MediaInfo, NewLink, Put, StoreError};

/// A server that stops answering mid-statement (network cut, paused host) must not
/// hold a write longer than an unreachable one would.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Links folded into one transaction; bounds the latency of the last one.
const MAX_BATCH_LINKS: usize = 4096;
/// Runs of a transaction the server aborted as a deadlock or serialization failure
/// (running it again succeeds), and tries of an id whose holder vanished under us.
const RETRIES: usize = 3;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Op {
    Put(Vec<NewLink>, Reply<Vec<Put>>),
    Delete(LinkId, Reply<bool>),
    SetMedia(LinkId, MediaInfo, Reply<()>),
    /// Applied after everything queued before it; the writer then exits.
    Shutdown(oneshot::Sender<()>),
}

impl Op {
    fn weight(&self) -> usize {
        match self {
            Op::Put(links, _) => links.len().max(1),
            _ => 1,
        }
    }

    /// The caller stopped waiting (its deadline passed): applying the op now would
    /// change the store behind an answer that already said "unavailable".
    fn abandoned(&self) -> bool {
        match self {
            Op::Put(_, r) => r.is_closed(),
            Op::Delete(_, r) => r.is_closed(),
            Op::SetMedia(_, _, r) => r.is_closed(),
            Op::Shutdown(_) => false,
        }
    }

    fn fail(self, err: StoreError) {
        match self {
            Op::Put(_, r) => drop(r.send(Err(err))),
            Op::Delete(_, r) => drop(r.send(Err(err))),
            Op::SetMedia(_, _, r) => drop(r.send(Err(err))),
            Op::Shutdown(done) => drop(done.send(())),
        }
    }
}

/// What one op did inside a transaction that then committed.
enum Outcome {
    Put(Result<Vec<Put>, StoreError>),
    Delete(bool),
    SetMedia,
}

/// Why a transaction did not commit, which decides what the writer does next.
#[derive(Debug)]
enum Failure {
    /// No usable connection (refused, cut, timed out, pool closed): nothing queued can
    /// succeed right now.
    Connection(String),
    /// Deadlock or serialization failure: the same transaction may succeed if re-run.
    Retry(String),
    /// One statement was refused (a data error): the other ops may succeed alone.
    Statement(String),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
            _ => return Failure::Connection(e.to_string()),
        };
        match code.as_deref().map(|c| c.get(..2).unwrap_or(c)) {
            Some("40") => Failure::Retry(e.to_string()),
            // Connection exception, operator intervention (shutdown, terminated
            // backend), insufficient resources, system error: the server, not the data.
            Some("08" | "53" | "57" | "58") | None => Failure::Connection(e.to_string()),
            Some(_) => Failure::Statement(e.to_string()),
        }
    }
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Failure::Connection(m) | Failure::Retry(m) | Failure::Statement(m) => {
                StoreError::Unavailable(m)
            }
        }
    }
}

pub(super) async fn writer_loop(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut shutdown = None;
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut weight = 0;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Shutdown(done) => shutdown = Some(done),
                op => {
                    weight += op.weight();
                    batch.push(op);
                }
            }
            if shutdown.is_some() || weight >= MAX_BATCH_LINKS {
                break;
            }
            next = rx.try_recv().ok();
        }
        batch.retain(|op| !op.abandoned());
        if let Some(outage) = apply(&pool, batch).await {
            // The server is unreachable: everything that queued up meanwhile would
            // only wait out another connect timeout. Answer it now.
            while shutdown.is_none() {
                match rx.try_recv() {
                    Ok(Op::Shutdown(done)) => shutdown = Some(done),
                    Ok(op) => op.fail(outage.clone()),
                    Err(_) => break,
                }
            }
        }
        if shutdown.is_some() {
            break;
        }
    }
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

/// Applies a batch and answers every op in it. Returns the error when the server is
/// unreachable, so the caller can answer the rest of the queue at once.
async fn apply(pool: &PgPool, batch: Vec<Op>) -> Option<StoreError> {
    if batch.is_empty() {
        return None;
    }
    let failure = match run_with_retries(pool, &batch).await {
        Ok(outcomes) => {
            answer(batch, outcomes);
            return None;
        }
        Err(f) => f,
    };
    if !matches!(failure, Failure::Statement(_)) || batch.len() == 1 {
        let outage = matches!(failure, Failure::Connection(_));
        let err = failure.into_error();
        for op in batch {
            op.fail(err.clone());
        }
        return outage.then_some(err);
    }
    // One op was refused and took the transaction with it: run each alone so it
    // fails by itself and its neighbours commit.
    let mut ops = batch.into_iter();
    while let Some(op) = ops.next() {
        let one = vec![op];
        match run_with_retries(pool, &one).await {
            Ok(outcomes) => answer(one, outcomes),
            Err(f) => {
                let outage = matches!(f, Failure::Connection(_));
                let err = f.into_error();
                one.into_iter().for_each(|op| op.fail(err.clone()));
                if outage {
                    ops.for_each(|op| op.fail(err.clone()));
                    return Some(err);
                }
            }
        }
    }
    None
}

fn answer(batch: Vec<Op>, outcomes: Vec<Outcome>) {
    for (op, outcome) in batch.into_iter().zip(outcomes) {
        match (op, outcome) {
            (Op::Put(_, r), Outcome::Put(puts)) => drop(r.send(puts)),
            (Op::Delete(_, r), Outcome::Delete(d)) => drop(r.send(Ok(d))),
            (Op::SetMedia(_, _, r), Outcome::SetMedia) => drop(r.send(Ok(()))),
            // run_batch gives one outcome per op, of the op's own kind.
            (op, _) => op.fail(StoreError::Unavailable("writer outcome mismatch".into())),
        }
    }
}

async fn run_with_retries(pool: &PgPool, batch: &[Op]) -> Result<Vec<Outcome>, Failure> {
    let mut attempt = 0;
    loop {
        match run_batch(pool, batch).await {
            Err(Failure::Retry(_)) if attempt < RETRIES => attempt += 1,
            result => return result,
        }
    }
}

/// Bounds one statement; a statement past its time counts as a lost connection.
async fn timed<T>(q: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, Failure> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, q).await {
        Ok(result) => result.map_err(Failure::from),
        Err(_) => Err(Failure::Connection(format!(
            "PostgreSQL did not answer within {} s",
            STATEMENT_TIMEOUT.as_secs()
        ))),
    }
}

/// One transaction for the whole batch, committed before any op is answered.
async fn run_batch(pool: &PgPool, batch: &[Op]) -> Result<Vec<Outcome>, Failure> {
    let mut conn = pool.acquire().await.map_err(Failure::from)?;
    let result = run_in_transaction(&mut conn, batch).await;
    if result.is_err() {
        // Its state is unknown (mid-statement, aborted transaction): never reuse it.
        conn.close_on_drop();
    }
    result
}

async fn run_in_transaction(
    conn: &mut PgConnection,
    batch: &[Op],
) -> Result<Vec<Outcome>, Failure> {
    // Rows are locked in id order, the same in every replica, so two batches touching
    // the same new ids wait for each other instead of deadlocking.
    let mut steps: Vec<(&str, usize, usize)> = Vec::new();
    for (i, op) in batch.iter().enumerate() {
        match op {
            Op::Put(links, _) => steps.extend(
                links
                    .iter()
                    .enumerate()
                    .map(|(j, l)| (first_candidate(l), i, j)),
            ),
            Op::Delete(id, _) | Op::SetMedia(id, _, _) => steps.push((id.as_str(), i, 0)),
            Op::Shutdown(_) => {}
        }
    }
    steps.sort_unstable();

    let mut puts: Vec<Vec<Option<Put>>> = batch
        .iter()
        .map(|op| match op {
            Op::Put(links, _) => vec![None; links.len()],
            _ => Vec::new(),
        })
        .collect();
    let mut put_errors: Vec<Option<StoreError>> = vec![None; batch.len()];
    let mut deleted = vec![false; batch.len()];

    timed(sqlx::query("BEGIN").execute(&mut *conn)).await?;
    for (_, i, j) in steps {
        match &batch[i] {
            Op::Put(links, _) => match put_one(conn, &links[j]).await? {
                Ok(put) => puts[i][j] = Some(put),
                Err(e) => put_errors[i] = Some(e),
            },
            Op::Delete(id, _) => {
                // No trace outlives its link.
                let q = sqlx::query("DELETE FROM link_events WHERE id = $1").bind(id.as_str());
                timed(q.execute(&mut *conn)).await?;
                // The notification is sent at COMMIT, so no replica hears of a delete
                // that did not happen.
                let q = sqlx::query(
                    "WITH d AS (DELETE FROM links WHERE id = $1 RETURNING id)
                     SELECT pg_notify($2, id) FROM d",
                )
                .bind(id.as_str())
                .bind(listen::CHANNEL);
                deleted[i] = timed(q.fetch_optional(&mut *conn)).await?.is_some();
            }
            Op::SetMedia(id, m, _) => {
                let q = sqlx::query(
                    "UPDATE links SET content_type = $2, bytes = $3, converted_from = $4 WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(&m.content_type)
                .bind(i64::try_from(m.bytes).unwrap_or(i64::MAX))
                .bind(m.converted_from.as_deref());
                timed(q.execute(&mut *conn)).await?;
            }
            Op::Shutdown(_) => {}
        }
    }
    timed(sqlx::query("COMMIT").execute(&mut *conn)).await?;

    let outcomes = batch
        .iter()
        .zip(puts)
        .zip(put_errors)
        .zip(deleted)
        .map(|(((op, puts), err), deleted)| match op {
            Op::Put(..) => Outcome::Put(match err {
                Some(e) => Err(e),
                None => puts
                    .into_iter()
                    .map(|p| p.ok_or_else(|| unavailable("a link of the batch was skipped")))
                    .collect(),
            }),
            Op::Delete(..) => Outcome::Delete(deleted),
            Op::SetMedia(..) | Op::Shutdown(_) => Outcome::SetMedia,
        })
        .collect();
    Ok(outcomes)
}

fn first_candidate(link: &NewLink) -> &str {
    match &link.plan {
        IdPlan::Derived(full) => &full.as_str()[..crate::ids::MIN_LEN],
        IdPlan::Exact(id) => id.as_str(),
    }
}

/// Claims the shortest free id for one link (DESIGN §2). The outer error aborts the
/// transaction; the inner one fails only this link's op.
async fn put_one(
    conn: &mut PgConnection,
    link: &NewLink,
) -> Result<Result<Put, StoreError>, Failure> {
    let m = link.media.as_ref();
    'ids: for id in link.plan.candidates() {
        // The holder may be deleted between our insert and our read: then the id is
        // free again, so try it again (a few times; more means a delete storm).
        for _ in 0..RETRIES {
            // ON CONFLICT waits for a concurrent insert of the same id to commit or
            // roll back, so exactly one writer creates it and the others read it.
            let q = sqlx::query(
                "INSERT INTO links (id, url, kind, created_at, expires_at, convert, content_type, bytes, converted_from, blob)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (id) DO NOTHING RETURNING id",
            )
            .bind(id.as_str())
            .bind(link.url.as_str())
            .bind(link.kind.as_str())
            .bind(link.created_at)
            .bind(link.expires_at)
            .bind(link.convert)
            .bind(m.map(|m| m.content_type.as_str()))
            .bind(m.map(|m| i64::try_from(m.bytes).unwrap_or(i64::MAX)))
            .bind(m.and_then(|m| m.converted_from.as_deref()))
            .bind(link.blob.as_deref());
            if timed(q.fetch_optional(&mut *conn)).await?.is_some() {
                return Ok(Ok(Put::Created(link.clone().into_record(id))));
            }
            let q = sqlx::query(&SELECT_BY_ID).bind(id.as_str());
            let Some(row) = timed(q.fetch_optional(&mut *conn)).await? else {
                continue;
            };
            let holder = match row_to_record(&row) {
                Ok(h) => h,
                Err(e) => return Ok(Err(e)),
            };
            if holder.url == link.url {
                return Ok(Ok(Put::Existing(holder)));
            }
            if matches!(link.plan, IdPlan::Exact(_)) {
                return Ok(Ok(Put::Conflict(id)));
            }
            // Taken by another URL: the next, longer prefix.
            continue 'ids;
        }
        return Ok(Err(StoreError::Unavailable(format!(
            "id {id} kept being created and deleted; try again"
        ))));
    }
    // 13 prefixes of a 128-bit keyed hash all taken by other URLs: not a collision
    // that can happen by chance; the store must have been tampered with.
    Ok(Err(StoreError::Corrupt("every id prefix is taken".into())))
}
