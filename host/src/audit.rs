//! The audit writer: the one path from sessions to the [`Store`].
//!
//! Sessions hand records to [`AuditLog`]; a writer task commits them in
//! groups (group commit): whatever arrived while the previous commit ran
//! goes into the next transaction, and nothing waits longer than the flush
//! interval (100 ms by default). Two durability modes, chosen per target:
//!
//! - `batched`: [`AuditLog::record`] returns once the record is queued;
//!   it is committed within the flush interval, and [`AuditLog::flush`] at
//!   shutdown commits the rest, so a clean stop loses nothing.
//! - `strict`: [`AuditLog::record_durably`] returns only after the record's
//!   transaction is committed to disk. The relay calls it before forwarding
//!   a statement, and refuses the statement if it fails.
//!
//! A failed commit is retried (with back-off) until it succeeds; nothing
//! queued is dropped. While the store fails, durable writes fail at once
//! (so strict targets refuse statements instead of hanging) and the queue
//! applies back-pressure to sessions once it is full.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Record, Store, StoreError};

/// Records a transaction holds at most.
const MAX_BATCH: usize = 4096;
/// Records queued before sessions wait for the writer.
const QUEUE_CAPACITY: usize = 65_536;
/// Session ids reserved from the store at a time.
const SESSION_ID_BLOCK: u64 = 1024;
/// Longest pause between retries of a failed commit.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Why an audit record could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The store refused or failed the write.
    #[error("the audit store cannot write: {0}")]
    Store(String),
    /// The writer has stopped (the gateway is shutting down).
    #[error("the audit writer has stopped")]
    Stopped,
}

enum Message {
    Write(Box<Record>, Option<oneshot::Sender<Result<(), AuditError>>>),
    Flush(oneshot::Sender<()>),
}

/// Hands records to the store's writer task; shared by every session.
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
    /// Wakes the writer before its interval is over: a record must be
    /// durable now, a flush waits, or the queue fills. (A batched record
    /// does not wake it: one wake per record cost the relay's CPU.)
    wake: Arc<tokio::sync::Notify>,
    store: Arc<dyn Store>,
    healthy: Arc<AtomicBool>,
    ids: tokio::sync::Mutex<(u64, u64)>,
}

impl AuditLog {
    /// Starts the writer task (on the current tokio runtime) for `store`,
    /// committing at least every `flush_interval`.
    pub fn start(store: Arc<dyn Store>, flush_interval: Duration) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(writer(
            rx,
            wake.clone(),
            store.clone(),
            healthy.clone(),
            flush_interval,
        ));
        Arc::new(Self {
            tx,
            wake,
            store,
            healthy,
            ids: tokio::sync::Mutex::new((0, 0)),
        })
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the last commit succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Queues a record; it is committed within the flush interval.
    pub async fn record(&self, record: Record) {
        if self
            .tx
            .send(Message::Write(Box::new(record), None))
            .await
            .is_err()
        {
            tracing::error!("audit record lost: the audit writer has stopped");
        }
        if QUEUE_CAPACITY - self.tx.capacity() >= MAX_BATCH {
            self.wake.notify_one();
        }
    }

    /// Writes a record and waits until it is committed to disk.
    pub async fn record_durably(&self, record: Record) -> Result<(), AuditError> {
        if !self.healthy() {
            // Fail fast while the store is failing; the writer keeps retrying.
            return Err(AuditError::Store(
                "the last commit failed and is being retried".into(),
            ));
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Message::Write(Box::new(record), Some(done)))
            .await
            .map_err(|_| AuditError::Stopped)?;
        self.wake.notify_one();
        wait.await.map_err(|_| AuditError::Stopped)?
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            self.wake.notify_one();
            let _ = wait.await;
        }
    }

    /// A new session id, unique in the store (reserved in blocks).
    pub async fn next_session_id(&self) -> Result<u64, AuditError> {
        let mut ids = self.ids.lock().await;
        if ids.0 >= ids.1 {
            let store = self.store.clone();
            let first =
                tokio::task::spawn_blocking(move || store.reserve_session_ids(SESSION_ID_BLOCK))
                    .await
                    .map_err(|e| AuditError::Store(e.to_string()))?
                    .map_err(|e| AuditError::Store(e.to_string()))?;
            *ids = (first, first + SESSION_ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }
}

/// A group of records on its way to one transaction.
struct Group {
    records: Vec<Record>,
    waiters: Vec<oneshot::Sender<Result<(), AuditError>>>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Group {
    /// An empty group whose records go into `buffer` (the previous
    /// group's, emptied: a group holds thousands of records, and a buffer
    /// grown afresh each time is reallocated and page-faulted in again
    /// every flush interval).
    fn new(buffer: Vec<Record>) -> Self {
        Self {
            records: buffer,
            waiters: Vec::new(),
            flushes: Vec::new(),
        }
    }

    fn add(&mut self, m: Message) {
        match m {
            Message::Write(r, w) => {
                self.records.push(*r);
                self.waiters.extend(w);
            }
            Message::Flush(f) => self.flushes.push(f),
        }
    }

    /// Whether to commit now rather than wait for more.
    fn urgent(&self) -> bool {
        !self.waiters.is_empty() || !self.flushes.is_empty() || self.records.len() >= MAX_BATCH
    }
}

async fn writer(
    mut rx: mpsc::Receiver<Message>,
    wake: Arc<tokio::sync::Notify>,
    store: Arc<dyn Store>,
    healthy: Arc<AtomicBool>,
    interval: Duration,
) {
    let mut open = true;
    let mut buffer = Vec::with_capacity(MAX_BATCH);
    while open {
        let mut group = Group::new(buffer);
        match rx.recv().await {
            Some(m) => group.add(m),
            None => break,
        }
        let deadline = tokio::time::Instant::now() + interval;
        loop {
            // Whatever is queued joins this commit.
            while group.records.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => group.add(m),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if group.urgent() || !open {
                break;
            }
            // Sleep until the interval is over, or something cannot wait.
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Whatever else is already queued joins this commit.
        while group.records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => group.add(m),
                Err(_) => break,
            }
        }
        buffer = commit(&store, &healthy, group).await;
    }
}

/// Commits a group, retrying until it succeeds; durable waiters learn of a
/// failure at once. Returns the group's buffer, emptied, for the next.
async fn commit(store: &Arc<dyn Store>, healthy: &AtomicBool, group: Group) -> Vec<Record> {
    let Group {
        records,
        mut waiters,
        flushes,
    } = group;
    let records = Arc::new(records);
    let mut delay = Duration::from_millis(100);
    loop {
        let (s, r) = (store.clone(), records.clone());
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || s.write(&r))
            .await
            .unwrap_or_else(|e| Err(StoreError::Database(e.to_string())));
        crate::metrics::global()
            .store_writes
            .observe(started.elapsed());
        match result {
            Ok(()) => {
                if !healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("audit store writable again");
                }
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
                for f in flushes {
                    let _ = f.send(());
                }
                // The store's thread has let go of its clone by now.
                let mut buffer = Arc::try_unwrap(records).unwrap_or_default();
                buffer.clear();
                return buffer;
            }
            Err(e) => {
                if healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, records = records.len(), "audit commit failed; retrying");
                }
                for w in waiters.drain(..) {
                    let _ = w.send(Err(AuditError::Store(e.to_string())));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{EventRecord, EventStatus};

    fn event(session_id: u64, seq: u64) -> EventRecord {
        EventRecord {
            session_id,
            seq,
            at: seq as i64,
            protocol: "simple".into(),
            sql: "select 1".into(),
            fingerprint: "".into(),
            kinds: vec![].into(),
            tables_read: vec![].into(),
            tables_written: vec![].into(),
            verdict: "allow".into(),
            decided_by: None,
            rule: None,
            reason: None,
            status: EventStatus::Ok,
            duration_us: None,
            rows: None,
            sqlstate: None,
            error: None,
            sample: None,
            approval_id: None,
            action: crate::store::Action::Statement,
        }
    }

    #[tokio::test]
    async fn batched_records_are_committed_within_the_interval_and_durable_ones_at_once(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = crate::test_dir::TestDir::new("portcullis-audit");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("a.db"))?);
        let log = AuditLog::start(store.clone(), Duration::from_millis(100));
        let id = log.next_session_id().await?;
        assert_eq!(log.next_session_id().await?, id + 1);
        for seq in 1..=1000 {
            log.record(Record::Event(event(id, seq))).await;
        }
        log.record_durably(Record::Event(event(id, 1001))).await?;
        // The durable write committed everything queued before it.
        assert_eq!(store.events(id)?.len(), 1001);
        log.record(Record::Event(event(id, 1002))).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.events(id)?.len(), 1002);
        Ok(())
    }
}
