//! A publisher with batched publisher confirms, plus the few topology operations the service
//! needs. Safe to share between threads: the connection is opened (and re-opened after a loss)
//! under an async mutex, publishes then run concurrently on one confirm-mode channel.
//!
//! Declarations use their own channel, so a failed passive declare (404, which closes the
//! channel) does not fail publishes in flight on another thread.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind, PublisherConfirm};
use tokio::sync::Mutex as AsyncMutex;

use crate::codec::py_repr_str;
use crate::connect::{op_error, ConnectSpec};
use crate::error::{CoreError, Result};
use crate::headers::{short_string, to_field_table, Headers};
use crate::runtime::ForkGuard;

const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What happened to one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed by the broker (or sent, when confirms are off).
    Ack,
    /// Negatively confirmed: the broker could not take responsibility for it.
    Nack,
    /// `mandatory` and no queue was bound for it.
    Returned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Nack => "nack",
            Outcome::Returned => "returned",
        }
    }
}

/// One message to publish.
#[derive(Debug, Clone, Default)]
pub struct OutMessage {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: Option<Headers>,
    pub timestamp: Option<u64>,
    pub content_type: Option<String>,
    /// The AMQP `user_id` property; RabbitMQ refuses a message whose `user_id` is not the
    /// connection's user, so a consumer can tell who published it.
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    pub persistent: bool,
    pub mandatory: bool,
    pub timeout: Option<Duration>,
}

#[derive(Default)]
struct Conn {
    conn: Option<Connection>,
    publish: Option<Channel>,
    admin: Option<Channel>,
    closed: bool,
}

pub struct PublisherCore {
    spec: ConnectSpec,
    guard: ForkGuard,
    confirms: bool,
    state: AsyncMutex<Conn>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Publish,
    Admin,
}

impl PublisherCore {
    /// Connect (on the runtime) and open the publishing channel.
    pub async fn connect(spec: ConnectSpec, confirms: bool) -> Result<Arc<PublisherCore>> {
        let core = Arc::new(PublisherCore {
            spec,
            guard: ForkGuard::new(),
            confirms,
            state: AsyncMutex::new(Conn::default()),
        });
        core.channel(Which::Publish).await?;
        Ok(core)
    }

    pub fn target(&self) -> &str {
        self.spec.display()
    }

    /// A usable channel, reconnecting once if the connection or channel is gone. Nothing was
    /// sent on a dead channel, so re-opening here can never duplicate a message.
    async fn channel(&self, which: Which) -> Result<Channel> {
        let mut st = self.state.lock().await;
        if st.closed {
            return Err(CoreError::Connection(format!(
                "the Publisher for {} is closed",
                self.spec.display()
            )));
        }
        let slot = match which {
            Which::Publish => &st.publish,
            Which::Admin => &st.admin,
        };
        if let Some(ch) = slot {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        let alive = st.conn.as_ref().is_some_and(|c| c.status().connected());
        if !alive {
            st.publish = None;
            st.admin = None;
            if let Some(old) = st.conn.take() {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_WAIT, old.close(200, "OK".into())).await;
                });
            }
            st.conn = Some(self.spec.connect("volley publisher").await?);
        }
        let target = self.spec.display();
        let conn = st
            .conn
            .as_ref()
            .ok_or_else(|| CoreError::Internal("publisher connection missing".into()))?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| op_error(&e, "opening a channel", target))?;
        if which == Which::Publish && self.confirms {
            ch.confirm_select(ConfirmSelectOptions { nowait: false })
                .await
                .map_err(|e| op_error(&e, "confirm.select", target))?;
        }
        match which {
            Which::Publish => st.publish = Some(ch.clone()),
            Which::Admin => st.admin = Some(ch.clone()),
        }
        Ok(ch)
    }

    /// Publish all messages, then wait for all their confirms; one outcome per message.
    pub async fn publish_batch(
        &self,
        messages: Vec<OutMessage>,
        opts: PublishOptions,
    ) -> Result<Vec<Outcome>> {
        // Validate everything before sending anything.
        let mut prepared = Vec::with_capacity(messages.len());
        for m in messages {
            let exchange = short_string(&m.exchange, "exchange name")?;
            let routing_key = short_string(&m.routing_key, "routing key")?;
            let mut props = BasicProperties::default();
            if opts.persistent {
                props = props.with_delivery_mode(2);
            }
            if let Some(ts) = m.timestamp {
                props = props.with_timestamp(ts);
            }
            if let Some(h) = &m.headers {
                props = props.with_headers(to_field_table(h)?);
            }
            if let Some(ct) = &m.content_type {
                props = props.with_content_type(short_string(ct, "content_type")?);
            }
            if let Some(user) = &m.user_id {
                props = props.with_user_id(short_string(user, "user_id")?);
            }
            prepared.push((exchange, routing_key, m.body, props));
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let channel = self.channel(Which::Publish).await?;
        let target = self.spec.display().to_owned();
        let work = async {
            let publishes: Vec<_> = prepared
                .iter()
                .map(|(exchange, routing_key, body, props)| {
                    channel.basic_publish(
                        exchange.clone(),
                        routing_key.clone(),
                        BasicPublishOptions {
                            mandatory: opts.mandatory,
                            immediate: false,
                        },
                        body,
                        props.clone(),
                    )
                })
                .collect();
            let confirms: Vec<PublisherConfirm> = join_all_in_order(publishes)
                .await
                .into_iter()
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| op_error(&e, "basic.publish", &target))?;
            let mut outcomes = Vec::with_capacity(confirms.len());
            for confirm in confirms {
                let c = confirm
                    .await
                    .map_err(|e| op_error(&e, "basic.publish", &target))?;
                outcomes.push(outcome(c));
            }
            Ok(outcomes)
        };
        match opts.timeout {
            None => work.await,
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => Err(CoreError::PublishTimeout(format!(
                    "publisher confirms for {} message{} did not arrive from {target} within \
                     {:.3} s",
                    prepared.len(),
                    if prepared.len() == 1 { "" } else { "s" },
                    limit.as_secs_f64()
                ))),
            },
        }
    }

    pub async fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        durable: bool,
        passive: bool,
    ) -> Result<()> {
        let exchange = short_string(name, "exchange name")?;
        let kind = match kind {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            other => ExchangeKind::Custom(other.to_owned()),
        };
        let ch = self.channel(Which::Admin).await?;
        ch.exchange_declare(
            exchange,
            kind,
            ExchangeDeclareOptions {
                passive,
                durable,
                auto_delete: false,
                internal: false,
                nowait: false,
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            op_error(
                &e,
                &format!("exchange.declare of {}", py_repr_str(name)),
                self.spec.display(),
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn declare_queue(
        &self,
        name: &str,
        durable: bool,
        passive: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: Option<Headers>,
    ) -> Result<u32> {
        let queue = short_string(name, "queue name")?;
        let args = match &arguments {
            Some(a) => to_field_table(a)?,
            None => FieldTable::default(),
        };
        let ch = self.channel(Which::Admin).await?;
        let q = ch
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive,
                    durable,
                    exclusive,
                    auto_delete,
                    nowait: false,
                },
                args,
            )
            .await
            .map_err(|e| {
                op_error(
                    &e,
                    &format!("queue.declare of {}", py_repr_str(name)),
                    self.spec.display(),
                )
            })?;
        Ok(q.message_count())
    }

    pub async fn bind_queue(&self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        let q = short_string(queue, "queue name")?;
        let x = short_string(exchange, "exchange name")?;
        let rk = short_string(routing_key, "routing key")?;
        let ch = self.channel(Which::Admin).await?;
        ch.queue_bind(
            q,
            x,
            rk,
            QueueBindOptions { nowait: false },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            op_error(
                &e,
                &format!(
                    "queue.bind of {} to {}",
                    py_repr_str(queue),
                    py_repr_str(exchange)
                ),
                self.spec.display(),
            )
        })
    }

    pub async fn delete_queue(&self, name: &str) -> Result<()> {
        let q = short_string(name, "queue name")?;
        let ch = self.channel(Which::Admin).await?;
        ch.queue_delete(
            q,
            QueueDeleteOptions {
                if_unused: false,
                if_empty: false,
                nowait: false,
            },
        )
        .await
        .map(drop)
        .map_err(|e| {
            op_error(
                &e,
                &format!("queue.delete of {}", py_repr_str(name)),
                self.spec.display(),
            )
        })
    }

    /// Close the connection (idempotent).
    pub async fn close(&self) {
        let conn = {
            let mut st = self.state.lock().await;
            st.closed = true;
            st.publish = None;
            st.admin = None;
            st.conn.take()
        };
        if let Some(conn) = conn {
            let _ = tokio::time::timeout(CLOSE_WAIT, conn.close(200, "OK".into())).await;
        }
    }

    /// Mark closed without waiting (from Drop / a forked child).
    pub fn close_nowait(&self) -> Option<Connection> {
        match self.state.try_lock() {
            Ok(mut st) => {
                st.closed = true;
                st.publish = None;
                st.admin = None;
                st.conn.take()
            }
            Err(_) => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        if self.guard.check().is_err() {
            return true;
        }
        match self.state.try_lock() {
            Ok(st) => st.closed,
            // Someone holds the lock to (re)connect or close; it is not closed yet unless the
            // holder is close() itself, which sets the flag under this lock soon.
            Err(_) => false,
        }
    }
}

fn outcome(c: Confirmation) -> Outcome {
    match c {
        Confirmation::Ack(None) | Confirmation::NotRequested => Outcome::Ack,
        Confirmation::Ack(Some(_)) => Outcome::Returned,
        Confirmation::Nack(Some(_)) => Outcome::Returned,
        Confirmation::Nack(None) => Outcome::Nack,
    }
}

/// Start all futures in order (their first poll queues their frames, so the wire order is the
/// vector order), then wait for each in turn; outputs in order. O(n), unlike re-polling all.
async fn join_all_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        for (fut, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                *out = Some(v);
            }
        }
        Poll::Ready(())
    })
    .await;
    let mut results = Vec::with_capacity(outputs.len());
    for (fut, out) in futures.into_iter().zip(outputs) {
        results.push(match out {
            Some(v) => v,
            None => fut.await,
        });
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_all_keeps_order() {
        let h = crate::runtime::handle().unwrap();
        let out = h.block_on(async {
            let futs: Vec<_> = (0..5u64)
                .map(|i| async move {
                    tokio::time::sleep(Duration::from_millis(50 - i * 10)).await;
                    i
                })
                .collect();
            join_all_in_order(futs).await
        });
        assert_eq!(out, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn outcomes_have_wire_names() {
        assert_eq!(outcome(Confirmation::NotRequested).as_str(), "ack");
        assert_eq!(outcome(Confirmation::Ack(None)).as_str(), "ack");
        assert_eq!(outcome(Confirmation::Nack(None)).as_str(), "nack");
    }
}
