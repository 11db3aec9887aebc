//! Delivery tags that stay unique across reconnects, and the ack bookkeeping of one connection.
//!
//! AMQP delivery tags restart at 1 on every channel. A [`TagSpace`] hands Python tags that
//! strictly increase for the life of a Consumer: each connection ("epoch") gets a base, the
//! highest tag handed out before it, and Python tag = base + AMQP tag. A Python tag at or below
//! the current base belongs to a dead connection: acking it is a no-op (the broker redelivers
//! those messages anyway).
//!
//! [`AckTracker`] remembers what was already settled on the current channel so that a repeated
//! or overlapping ack is not sent: RabbitMQ closes the channel (406 PRECONDITION_FAILED,
//! "unknown delivery tag") when a tag is acknowledged twice.

use std::collections::BTreeSet;

/// What to send for a Python-level ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPlan {
    /// Send this AMQP tag (with `multiple` as requested).
    Send(u64),
    /// Nothing to send: old connection, or already settled.
    Skip,
    /// The tag was never handed out by this Consumer.
    Unknown,
}

#[derive(Debug, Default, Clone)]
pub struct TagSpace {
    /// Python tag = base + AMQP tag, for the current epoch.
    base: u64,
    /// Highest Python tag assigned so far (any epoch).
    assigned: u64,
    /// Highest Python tag returned to Python so far.
    handed_out: u64,
    acks: AckTracker,
}

impl TagSpace {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new connection begins: its AMQP tags start again at 1.
    pub fn new_epoch(&mut self) {
        self.base = self.assigned;
        self.handed_out = self.assigned;
        self.acks = AckTracker::default();
    }

    /// Python tag for a delivery of the current epoch.
    pub fn assign(&mut self, amqp_tag: u64) -> u64 {
        let tag = self.base.saturating_add(amqp_tag).max(self.assigned + 1);
        self.assigned = tag;
        tag
    }

    /// Record that deliveries up to `tag` were returned to Python.
    pub fn handed_out(&mut self, tag: u64) {
        self.handed_out = self.handed_out.max(tag);
    }

    /// Highest Python tag returned to Python.
    pub fn last_handed_out(&self) -> u64 {
        self.handed_out
    }

    fn amqp_tag(&self, tag: u64) -> Result<u64, AckPlan> {
        if tag <= self.base {
            Err(AckPlan::Skip)
        } else if tag > self.handed_out {
            Err(AckPlan::Unknown)
        } else {
            Ok(tag - self.base)
        }
    }

    /// `basic.ack(multiple=True)` through `tag`.  The broker refuses (and closes the channel)
    /// a multiple-ack whose own tag is already settled, so the frame names the highest tag
    /// `<= tag` still unsettled; everything up to `tag` counts as settled afterwards.
    pub fn plan_ack_through(&mut self, tag: u64) -> AckPlan {
        match self.amqp_tag(tag) {
            Ok(t) => match self.acks.settle_through(t) {
                Some(send) => AckPlan::Send(send),
                None => AckPlan::Skip,
            },
            Err(plan) => plan,
        }
    }

    /// A single `basic.ack` / `basic.nack` of `tag`.
    pub fn plan_settle_one(&mut self, tag: u64) -> AckPlan {
        match self.amqp_tag(tag) {
            Ok(t) if self.acks.settle_one(t) => AckPlan::Send(t),
            Ok(_) => AckPlan::Skip,
            Err(plan) => plan,
        }
    }
}

/// Settled AMQP tags of one channel: everything `<= through`, plus `singles` above it.
#[derive(Debug, Default, Clone)]
pub struct AckTracker {
    through: u64,
    singles: BTreeSet<u64>,
}

impl AckTracker {
    /// Settle everything through `tag`; returns the tag a multiple-ack must name to do that
    /// on the broker (the highest one not settled before), or None if nothing was unsettled.
    pub fn settle_through(&mut self, tag: u64) -> Option<u64> {
        if tag <= self.through {
            return None;
        }
        let mut send = tag;
        while send > self.through && self.singles.contains(&send) {
            send -= 1;
        }
        let unsettled = send > self.through;
        self.through = tag;
        self.singles = self.singles.split_off(&(tag + 1));
        self.compact();
        unsettled.then_some(send)
    }

    /// Returns whether `tag` was still unsettled.
    pub fn settle_one(&mut self, tag: u64) -> bool {
        if tag <= self.through || !self.singles.insert(tag) {
            return false;
        }
        self.compact();
        true
    }

    fn compact(&mut self) {
        while self.singles.remove(&(self.through + 1)) {
            self.through += 1;
        }
    }

    pub fn is_settled(&self, tag: u64) -> bool {
        tag <= self.through || self.singles.contains(&tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_increase_across_epochs() {
        let mut s = TagSpace::new();
        s.new_epoch();
        assert_eq!(s.assign(1), 1);
        assert_eq!(s.assign(2), 2);
        assert_eq!(s.assign(3), 3);
        s.handed_out(2);
        // Reconnect: tag 3 was buffered but never handed out; the broker will redeliver it.
        s.new_epoch();
        assert_eq!(s.assign(1), 4);
        assert_eq!(s.assign(2), 5);
        s.handed_out(5);
        assert_eq!(s.plan_ack_through(2), AckPlan::Skip, "old epoch is a no-op");
        assert_eq!(s.plan_ack_through(3), AckPlan::Skip, "base itself is old");
        assert_eq!(s.plan_ack_through(4), AckPlan::Send(1));
        assert_eq!(s.plan_ack_through(5), AckPlan::Send(2));
        assert_eq!(s.plan_ack_through(6), AckPlan::Unknown);
    }

    #[test]
    fn repeated_and_overlapping_acks_are_not_resent() {
        let mut s = TagSpace::new();
        s.new_epoch();
        for t in 1..=10 {
            s.assign(t);
        }
        s.handed_out(10);
        assert_eq!(s.plan_settle_one(3), AckPlan::Send(3));
        assert_eq!(s.plan_settle_one(3), AckPlan::Skip);
        assert_eq!(s.plan_ack_through(5), AckPlan::Send(5));
        assert_eq!(s.plan_ack_through(5), AckPlan::Skip);
        assert_eq!(s.plan_ack_through(4), AckPlan::Skip);
        assert_eq!(s.plan_settle_one(5), AckPlan::Skip);
        assert_eq!(s.plan_settle_one(7), AckPlan::Send(7));
        assert_eq!(s.plan_settle_one(6), AckPlan::Send(6));
        // 6 and 7 compacted into the watermark: a multiple-ack through 7 has nothing to do.
        assert_eq!(s.plan_ack_through(7), AckPlan::Skip);
        assert_eq!(s.plan_ack_through(10), AckPlan::Send(10));
        assert_eq!(s.plan_settle_one(0), AckPlan::Skip);
    }

    #[test]
    fn tracker_singles_above_the_watermark_survive() {
        let mut t = AckTracker::default();
        assert!(t.settle_one(9));
        assert_eq!(t.settle_through(4), Some(4));
        assert!(t.is_settled(9));
        assert!(!t.is_settled(5));
        assert_eq!(t.settle_through(8), Some(8));
        assert!(t.is_settled(9));
        assert!(!t.settle_one(9));
        assert_eq!(t.settle_through(9), None);
    }

    #[test]
    fn multiple_ack_never_names_a_tag_already_settled() {
        // the broker closes the channel on basic.ack(multiple) of a tag it no longer holds
        let mut t = AckTracker::default();
        assert!(t.settle_one(5));
        assert!(t.settle_one(4));
        assert_eq!(t.settle_through(5), Some(3));
        assert!(t.is_settled(1) && t.is_settled(5));
        // everything in between already settled one by one: nothing to send
        let mut u = AckTracker::default();
        assert!(u.settle_one(1) && u.settle_one(3) && u.settle_one(2));
        assert_eq!(u.settle_through(3), None);
    }
}
