//! A streaming consumer: one tokio task owns the connection, decodes deliveries as they arrive
//! and buffers them; a (Python) thread takes them out in batches with [`ConsumerCore::wait_batch`]
//! without ever running on the runtime.
//!
//! A lost connection is reported, not retried: the buffered deliveries are dropped (the broker
//! redelivers them), the next wait raises, and the caller's one reconnect policy
//! (`volley.transport.reconnect` in Python) opens a new consumer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_core::Stream;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::batches::{self, Part};
use crate::codec::{self, Message};
use crate::connect::{op_error, ConnectSpec};
use crate::error::{CoreError, Result};
use crate::headers::{self, short_string, Headers};
use crate::runtime::{ForkGuard, Pending};
use crate::tags::{AckPlan, TagSpace};

/// How long `close()` waits for the connection to close cleanly.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Deliveries moved from lapin into the shared buffer per lock.
const PUMP_CHUNK: usize = 256;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub queue: String,
    /// The subscription's per-consumer limit: the ceiling.
    pub prefetch: u16,
    /// A channel-wide limit applied before subscribing (see [`ConsumerCore::set_prefetch`]).
    pub channel_prefetch: Option<u16>,
    pub exclusive: bool,
    pub decode: bool,
}

/// One delivery, decoded off the Python thread.
#[derive(Debug, Clone)]
pub struct RawDelivery {
    pub tag: u64,
    pub redelivered: bool,
    pub exchange: String,
    pub routing_key: String,
    pub timestamp: Option<u64>,
    /// The AMQP `user_id` property: RabbitMQ lets a publisher set only its own user name.
    pub user_id: Option<String>,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// `None` when decoding is off or the delivery is a result batch; else the message or why
    /// it is invalid.
    pub decoded: Option<std::result::Result<Message, String>>,
    /// A result batch, when decoding: its results, or why the body does not split.
    pub batch: Option<std::result::Result<Vec<Part>, String>>,
}

/// Outcome of one bounded wait.
#[derive(Debug)]
pub enum Wait {
    Batch(Vec<RawDelivery>),
    TimedOut,
    Closed,
}

#[derive(Default)]
struct State {
    buffer: VecDeque<RawDelivery>,
    tags: TagSpace,
    /// Channel of the current epoch, for acks; `None` while reconnecting.
    channel: Option<Channel>,
    /// Set when retries are exhausted (or the driver died); sticky.
    failure: Option<CoreError>,
    closed: bool,
    driver_done: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when deliveries arrive, on failure, on close, and when the driver exits.
    ready: Condvar,
    close_tx: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent in a way that matters
        // more than stopping would; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, err: CoreError) {
        let mut st = self.lock();
        st.buffer.clear();
        st.channel = None;
        if st.failure.is_none() {
            st.failure = Some(err);
        }
        drop(st);
        self.ready.notify_all();
    }
}

struct Session {
    conn: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

pub struct ConsumerCore {
    shared: Arc<Shared>,
    spec: Arc<ConnectSpec>,
    handle: Handle,
    guard: ForkGuard,
    /// Serializes ack/nack sends so they reach the broker in the order they were planned.
    ack_lock: Mutex<()>,
}

impl ConsumerCore {
    /// Start connecting and subscribing; call [`Pending::wait`] on the result, then
    /// [`ConsumerCore::start`].
    pub fn connect(
        handle: &Handle,
        spec: Arc<ConnectSpec>,
        cfg: Arc<ConsumerConfig>,
    ) -> Result<Pending<Connected>> {
        short_string(&cfg.queue, "queue name")?;
        Ok(Pending::spawn(handle, async move {
            let session = open_session(&spec, &cfg).await?;
            Ok(Connected { session, spec, cfg })
        }))
    }

    /// Hand the first session to a background driver task.
    pub fn start(handle: &Handle, connected: Connected) -> ConsumerCore {
        let Connected { session, spec, cfg } = connected;
        let (close_tx, close_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            close_tx,
        });
        begin_epoch(&shared, &session);
        let driver = handle.spawn(drive(shared.clone(), spec.clone(), cfg, session, close_rx));
        let monitor_shared = shared.clone();
        handle.spawn(async move {
            if let Err(e) = driver.await {
                let what = if e.is_panic() {
                    format!(
                        "the consumer task panicked: {}",
                        crate::runtime::panic_message(e.into_panic().as_ref())
                    )
                } else {
                    "the consumer task was cancelled".to_owned()
                };
                monitor_shared.fail(CoreError::Internal(what));
            }
            monitor_shared.lock().driver_done = true;
            monitor_shared.ready.notify_all();
        });
        ConsumerCore {
            shared,
            spec,
            handle: handle.clone(),
            guard: ForkGuard::new(),
            ack_lock: Mutex::new(()),
        }
    }

    pub fn check_fork(&self) -> Result<()> {
        self.guard.check()
    }

    /// Wait at most `slice` for deliveries; return up to `max` of those buffered.
    pub fn wait_batch(&self, max: usize, slice: Duration) -> Result<Wait> {
        self.guard.check()?;
        let deadline = Instant::now() + slice;
        let mut st = self.shared.lock();
        loop {
            if st.closed {
                return Ok(Wait::Closed);
            }
            if !st.buffer.is_empty() {
                let n = max.min(st.buffer.len());
                let batch: Vec<RawDelivery> = st.buffer.drain(..n).collect();
                if let Some(last) = batch.last() {
                    st.tags.handed_out(last.tag);
                }
                return Ok(Wait::Batch(batch));
            }
            if let Some(err) = &st.failure {
                return Err(err.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Wait::TimedOut);
            }
            st = self
                .shared
                .ready
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Change how many unacked deliveries the broker may push, at once and without
    /// re-subscribing: a channel-wide `basic.qos` (RabbitMQ applies it to the running consumer
    /// at once, besides the subscription's own per-consumer limit, which stays the ceiling).
    pub fn set_prefetch(&self, count: u16) -> Result<()> {
        self.guard.check()?;
        let channel = {
            let st = self.shared.lock();
            if st.closed {
                return Ok(());
            }
            st.channel.clone()
        };
        let Some(channel) = channel else {
            return Ok(()); // the connection is gone: the next wait reports it
        };
        let target = self.spec.display().to_owned();
        let pending = Pending::spawn(&self.handle, async move {
            channel
                .basic_qos(count, BasicQosOptions { global: true })
                .await
                .map_err(|e| op_error(&e, "basic.qos", &target))
        });
        pending.wait_all()
    }

    /// `basic.ack(tag, multiple=true)`.
    pub fn ack_through(&self, tag: u64) -> Result<()> {
        self.settle(tag, Settle::AckThrough)
    }

    /// `basic.ack(tag)`.
    pub fn ack(&self, tag: u64) -> Result<()> {
        self.settle(tag, Settle::Ack)
    }

    /// `basic.nack(tag, requeue)`.
    pub fn nack(&self, tag: u64, requeue: bool) -> Result<()> {
        self.settle(tag, Settle::Nack { requeue })
    }

    fn settle(&self, tag: u64, how: Settle) -> Result<()> {
        self.guard.check()?;
        let _order = self.ack_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (plan, channel) = {
            let mut st = self.shared.lock();
            if st.closed || st.channel.is_none() {
                // Closed, or between connections: the broker redelivers what was unacked.
                return Ok(());
            }
            let plan = match how {
                Settle::AckThrough => st.tags.plan_ack_through(tag),
                Settle::Ack | Settle::Nack { .. } => st.tags.plan_settle_one(tag),
            };
            (plan, st.channel.clone())
        };
        let amqp_tag = match plan {
            AckPlan::Skip => return Ok(()),
            AckPlan::Unknown => {
                return Err(CoreError::InvalidArgument(format!(
                    "delivery tag {tag} was never returned by next_batch() of this Consumer"
                )))
            }
            AckPlan::Send(t) => t,
        };
        let Some(channel) = channel else {
            return Ok(());
        };
        let pending = Pending::spawn(&self.handle, async move {
            let res = match how {
                Settle::AckThrough => {
                    channel
                        .basic_ack(amqp_tag, BasicAckOptions { multiple: true })
                        .await
                }
                Settle::Ack => {
                    channel
                        .basic_ack(amqp_tag, BasicAckOptions { multiple: false })
                        .await
                }
                Settle::Nack { requeue } => {
                    channel
                        .basic_nack(
                            amqp_tag,
                            BasicNackOptions {
                                multiple: false,
                                requeue,
                            },
                        )
                        .await
                }
            };
            // A failed ack means the channel is gone; the driver reconnects and the broker
            // redelivers, which is exactly what acking a dead connection's tag means.
            drop(res);
            Ok(())
        });
        pending.wait_all()
    }

    /// Stop consuming: wakes every waiter (they return no deliveries), then waits up to
    /// `wait` for the connection to close so the broker requeues unacked messages promptly.
    pub fn close(&self, wait: Duration) {
        if self.guard.check().is_err() {
            // In a forked child: the parent's threads (and maybe a lock they held at fork time)
            // are not here; touch nothing.
            return;
        }
        {
            let mut st = self.shared.lock();
            if !st.closed {
                st.closed = true;
                st.buffer.clear();
                st.channel = None;
            }
        }
        self.shared.ready.notify_all();
        let _ = self.shared.close_tx.send(true);
        let deadline = Instant::now() + wait;
        let mut st = self.shared.lock();
        while !st.driver_done {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .shared
                .ready
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// True once closed; always true in a forked child, where the object cannot work.
    pub fn is_closed(&self) -> bool {
        self.guard.check().is_err() || self.shared.lock().closed
    }

    pub fn target(&self) -> &str {
        self.spec.display()
    }
}

impl Drop for ConsumerCore {
    fn drop(&mut self) {
        self.close(Duration::ZERO);
    }
}

/// Returned by the first connect; turned into a running consumer by [`ConsumerCore::start`].
pub struct Connected {
    session: Session,
    spec: Arc<ConnectSpec>,
    cfg: Arc<ConsumerConfig>,
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    AckThrough,
    Ack,
    Nack { requeue: bool },
}

async fn open_session(spec: &ConnectSpec, cfg: &ConsumerConfig) -> Result<Session> {
    let conn = spec
        .connect(&format!("volley consumer ({})", cfg.queue))
        .await?;
    match subscribe(&conn, spec, cfg).await {
        Ok((channel, consumer)) => Ok(Session {
            conn,
            channel,
            consumer,
        }),
        Err(e) => {
            let _ = conn.close(200, "OK".into()).await;
            Err(e)
        }
    }
}

async fn subscribe(
    conn: &Connection,
    spec: &ConnectSpec,
    cfg: &ConsumerConfig,
) -> Result<(Channel, lapin::Consumer)> {
    let target = spec.display();
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| op_error(&e, "opening a channel", target))?;
    channel
        .basic_qos(cfg.prefetch, BasicQosOptions { global: false })
        .await
        .map_err(|e| op_error(&e, "basic.qos", target))?;
    if let Some(count) = cfg.channel_prefetch {
        channel
            .basic_qos(count, BasicQosOptions { global: true })
            .await
            .map_err(|e| op_error(&e, "basic.qos", target))?;
    }
    let consumer = channel
        .basic_consume(
            short_string(&cfg.queue, "queue name")?,
            "".into(),
            BasicConsumeOptions {
                no_local: false,
                no_ack: false,
                exclusive: cfg.exclusive,
                nowait: false,
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            op_error(
                &e,
                &format!("basic.consume on queue {}", codec::py_repr_str(&cfg.queue)),
                target,
            )
        })?;
    Ok((channel, consumer))
}

fn begin_epoch(shared: &Shared, session: &Session) {
    let mut st = shared.lock();
    st.buffer.clear();
    st.tags.new_epoch();
    st.channel = Some(session.channel.clone());
}

fn convert(delivery: lapin::message::Delivery, tag: u64, decode: bool) -> RawDelivery {
    let props = &delivery.properties;
    let headers = props
        .headers()
        .as_ref()
        .map(headers::from_field_table)
        .unwrap_or_default();
    let timestamp = *props.timestamp();
    let user_id = props.user_id().as_ref().map(|u| u.as_str().to_owned());
    let count = if decode {
        batches::batch_count(&headers)
    } else {
        None
    };
    let batch = count.map(|count| batches::decode_batch(&delivery.data, count));
    let decoded = (decode && batch.is_none())
        .then(|| codec::decode(&delivery.data).map_err(|e| e.to_string()));
    RawDelivery {
        tag,
        redelivered: delivery.redelivered,
        exchange: delivery.exchange.as_str().to_owned(),
        routing_key: delivery.routing_key.as_str().to_owned(),
        timestamp,
        user_id,
        headers,
        decoded,
        batch,
        body: delivery.data,
    }
}

enum PumpEnd {
    Closed,
    Lost(String),
}

/// Move deliveries into the shared buffer until the connection dies or the consumer is closed.
async fn pump(
    shared: &Shared,
    cfg: &ConsumerConfig,
    consumer: &mut lapin::Consumer,
    close_rx: &mut watch::Receiver<bool>,
) -> PumpEnd {
    loop {
        let first = tokio::select! {
            _ = close_rx.wait_for(|closed| *closed) => return PumpEnd::Closed,
            item = poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx)) => item,
        };
        let mut items = Vec::with_capacity(16);
        let mut end = None;
        match first {
            Some(Ok(d)) => items.push(d),
            Some(Err(e)) => end = Some(format!("{e}")),
            None => end = Some("the broker cancelled the consumer (was the queue deleted?)".into()),
        }
        // Take whatever else is already there without waiting, to lock the buffer once.
        while end.is_none() && items.len() < PUMP_CHUNK {
            let next = poll_fn(|cx| Poll::Ready(Pin::new(&mut *consumer).poll_next(cx))).await;
            match next {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(d))) => items.push(d),
                Poll::Ready(Some(Err(e))) => end = Some(format!("{e}")),
                Poll::Ready(None) => {
                    end = Some("the broker cancelled the consumer (was the queue deleted?)".into())
                }
            }
        }
        if !items.is_empty() {
            // Decode before taking the lock; tags are assigned under it.
            let converted: Vec<(u64, RawDelivery)> = items
                .into_iter()
                .map(|d| (d.delivery_tag, convert(d, 0, cfg.decode)))
                .collect();
            let mut st = shared.lock();
            if st.closed {
                return PumpEnd::Closed;
            }
            for (amqp_tag, mut raw) in converted {
                raw.tag = st.tags.assign(amqp_tag);
                st.buffer.push_back(raw);
            }
            drop(st);
            shared.ready.notify_all();
        }
        if let Some(reason) = end {
            return PumpEnd::Lost(reason);
        }
    }
}

async fn drive(
    shared: Arc<Shared>,
    spec: Arc<ConnectSpec>,
    cfg: Arc<ConsumerConfig>,
    mut session: Session,
    mut close_rx: watch::Receiver<bool>,
) {
    let end = pump(&shared, &cfg, &mut session.consumer, &mut close_rx).await;
    // Deliveries of this connection can no longer be acked: drop them, stop acking.
    {
        let mut st = shared.lock();
        st.buffer.clear();
        st.channel = None;
    }
    match end {
        PumpEnd::Closed => {
            let _ = tokio::time::timeout(CLOSE_WAIT, session.conn.close(200, "OK".into())).await;
        }
        PumpEnd::Lost(reason) => {
            // Best effort: the connection may be half-alive (e.g. only the channel was closed).
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(CLOSE_WAIT, session.conn.close(200, "OK".into())).await;
            });
            shared.fail(CoreError::Connection(format!(
                "lost the connection to {} ({reason})",
                spec.display()
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(tag: u64) -> RawDelivery {
        RawDelivery {
            tag,
            redelivered: false,
            exchange: String::new(),
            routing_key: "q".into(),
            timestamp: None,
            user_id: None,
            headers: Vec::new(),
            body: Vec::new(),
            decoded: None,
            batch: None,
        }
    }

    fn core_without_connection() -> ConsumerCore {
        let (close_tx, _rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            close_tx,
        });
        shared.lock().driver_done = true;
        ConsumerCore {
            shared,
            spec: Arc::new(ConnectSpec::new("amqp://127.0.0.1:1/%2F", None, None).unwrap()),
            handle: crate::runtime::handle().unwrap(),
            guard: ForkGuard::new(),
            ack_lock: Mutex::new(()),
        }
    }

    #[test]
    fn batches_take_what_is_buffered_without_waiting_to_fill() {
        let core = core_without_connection();
        {
            let mut st = core.shared.lock();
            st.tags.new_epoch();
            for t in 1..=5 {
                let tag = st.tags.assign(t);
                st.buffer.push_back(raw(tag));
            }
        }
        let take = |max| match core.wait_batch(max, Duration::from_millis(1)).unwrap() {
            Wait::Batch(b) => b.iter().map(|d| d.tag).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(take(2), [1, 2]);
        assert_eq!(take(10), [3, 4, 5]);
        assert!(matches!(
            core.wait_batch(10, Duration::from_millis(20)).unwrap(),
            Wait::TimedOut
        ));
        assert_eq!(core.shared.lock().tags.last_handed_out(), 5);
    }

    #[test]
    fn a_waiter_wakes_on_push_and_on_close() {
        let core = Arc::new(core_without_connection());
        core.shared.lock().tags.new_epoch();
        let waiter = {
            let core = core.clone();
            std::thread::spawn(move || core.wait_batch(10, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(50));
        {
            let mut st = core.shared.lock();
            let tag = st.tags.assign(1);
            st.buffer.push_back(raw(tag));
        }
        core.shared.ready.notify_all();
        match waiter.join().unwrap().unwrap() {
            Wait::Batch(b) => assert_eq!(b.len(), 1),
            other => panic!("{other:?}"),
        }

        let waiter = {
            let core = core.clone();
            std::thread::spawn(move || core.wait_batch(10, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        core.close(Duration::from_secs(1));
        assert!(matches!(waiter.join().unwrap().unwrap(), Wait::Closed));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(core.is_closed());
        // Idempotent, and acks after close are no-ops.
        core.close(Duration::from_secs(1));
        assert_eq!(core.ack_through(1), Ok(()));
    }

    #[test]
    fn failure_is_sticky_and_reported_to_waiters() {
        let core = core_without_connection();
        core.shared.fail(CoreError::Connection("gone".into()));
        assert_eq!(
            core.wait_batch(1, Duration::from_millis(1)).unwrap_err(),
            CoreError::Connection("gone".into())
        );
        assert!(core.wait_batch(1, Duration::from_millis(1)).is_err());
    }
}
