//! The Redis side of the job queue: stream commands on two connections,
//! one for blocking reads (no response timeout) and one for the rest.

use super::{Entry, JobEntry, ResultEntry, Streams};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};
use std::time::Duration;

/// Entries kept in the dead-letter stream (approximately).
const DEAD_MAXLEN: u64 = 10_000;

/// Streams of one cluster, as one consumer sees them.
#[derive(Clone)]
pub struct Queue {
    cmd: ConnectionManager,
    block: ConnectionManager,
    pub streams: Streams,
    pub consumer: String,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("streams", &self.streams)
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl Queue {
    pub async fn connect(url: &str, streams: Streams, consumer: String) -> RedisResult<Queue> {
        let client = redis::Client::open(url)?;
        let cmd = ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(5))),
        )
        .await?;
        let block = ConnectionManager::new_with_config(
            client,
            ConnectionManagerConfig::new().set_response_timeout(None),
        )
        .await?;
        Ok(Queue {
            cmd,
            block,
            streams,
            consumer,
        })
    }

    /// Creates the consumer group (and the stream) unless it exists.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> RedisResult<()> {
        let r: RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.cmd.clone())
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> RedisResult<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.cmd.clone())
            .await
            .map(|_| ())
    }

    pub async fn add_job(&self, e: &JobEntry) -> RedisResult<String> {
        redis::cmd("XADD")
            .arg(&self.streams.jobs)
            .arg("*")
            .arg(e.fields())
            .query_async(&mut self.cmd.clone())
            .await
    }

    pub async fn report(&self, r: &ResultEntry) -> RedisResult<()> {
        redis::cmd("XADD")
            .arg(&self.streams.results)
            .arg("*")
            .arg(r.fields())
            .query_async::<String>(&mut self.cmd.clone())
            .await
            .map(|_| ())
    }

    /// Entries for this consumer: `">"` new ones (waiting up to `block`),
    /// `"0"` those delivered to it before and not acknowledged.
    pub async fn read(
        &self,
        stream: &str,
        group: &str,
        from: &str,
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<Entry>> {
        let mut c = redis::cmd("XREADGROUP");
        c.arg("GROUP").arg(group).arg(&self.consumer);
        c.arg("COUNT").arg(count);
        if from == ">" {
            c.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        c.arg("STREAMS").arg(stream).arg(from);
        let v: Value = c.query_async(&mut self.block.clone()).await?;
        Ok(super::read_reply(&v))
    }

    /// Takes over entries pending longer than `min_idle` (their consumer
    /// died); returns them and the ids of pending entries already deleted.
    pub async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        min_idle: Duration,
        count: usize,
    ) -> RedisResult<(Vec<Entry>, Vec<String>)> {
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.cmd.clone())
            .await?;
        Ok(super::autoclaim_reply(&v))
    }

    /// How many times entry `id` was delivered.
    pub async fn deliveries(&self, stream: &str, group: &str, id: &str) -> RedisResult<u32> {
        let v: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.cmd.clone())
            .await?;
        Ok(super::deliveries_reply(&v).unwrap_or(1))
    }

    /// Acknowledges and deletes an entry (each stream has one group).
    pub async fn ack(&self, stream: &str, group: &str, id: &str) -> RedisResult<()> {
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(stream)
            .arg(id)
            .ignore()
            .query_async::<()>(&mut self.cmd.clone())
            .await
    }

    /// Reports and acknowledges job entry `id` in one step.
    pub async fn finish(&self, id: &str, r: &ResultEntry) -> RedisResult<()> {
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("XADD")
            .arg(&self.streams.results)
            .arg("*")
            .arg(r.fields())
            .ignore();
        self.ack_in(&mut p, id);
        p.query_async::<()>(&mut self.cmd.clone()).await
    }

    /// Queues run `next` of a job and acknowledges entry `id`, in one step.
    pub async fn requeue(&self, id: &str, next: &JobEntry) -> RedisResult<()> {
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("XADD")
            .arg(&self.streams.jobs)
            .arg("*")
            .arg(next.fields())
            .ignore();
        self.ack_in(&mut p, id);
        p.query_async::<()>(&mut self.cmd.clone()).await
    }

    /// Dead-letters a job (the dead stream and a `failed` result) and
    /// acknowledges entry `id`, in one step.
    pub async fn bury(&self, id: &str, e: &JobEntry, r: &ResultEntry) -> RedisResult<()> {
        let reason = match &r.report {
            super::Report::Failed { reason } => reason.clone(),
            _ => String::new(),
        };
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("XADD")
            .arg(&self.streams.dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_MAXLEN)
            .arg("*")
            .arg("job")
            .arg(&e.job)
            .arg("ct")
            .arg(&e.content_type)
            .arg("attempts")
            .arg(e.attempt)
            .arg("reason")
            .arg(reason)
            .ignore();
        p.cmd("XADD")
            .arg(&self.streams.results)
            .arg("*")
            .arg(r.fields())
            .ignore();
        self.ack_in(&mut p, id);
        p.query_async::<()>(&mut self.cmd.clone()).await
    }

    fn ack_in(&self, p: &mut redis::Pipeline, id: &str) {
        p.cmd("XACK")
            .arg(&self.streams.jobs)
            .arg(super::WORKERS_GROUP)
            .arg(id)
            .ignore();
        p.cmd("XDEL").arg(&self.streams.jobs).arg(id).ignore();
    }
}
