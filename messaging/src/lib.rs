//! Palaver's messaging core: accounts, devices, verification codes and the
//! per-device store-and-forward queues.
//!
//! The crate has two layers:
//! - [`policy`]: pure rules with no I/O (phone numbers, codes, credentials,
//!   which devices a send must cover, when a code is accepted). They take
//!   `now` as an argument and are unit-tested in isolation.
//! - [`business`]: business profiles, opening hours, automatic messages.
//! - [`chats`]: edit and delete-for-everyone windows, disappearing timers.
//! - [`groups`]: pure rules of group chats (roles, permissions, limits,
//!   the events each change produces).
//! - [`keys`]: pure rules of the end-to-end key directory (sizes, limits,
//!   signatures of signed prekeys).
//! - [`store`]: the [`Store`] trait, the only door to durable state, and
//!   [`sqlite::SqliteStore`], its embedded implementation, and
//!   [`postgres::PostgresStore`], for several nodes sharing one database.
//!
//! Ordering contract: a store calls its [`Notifier`] after each commit, in
//! commit order, for the envelopes that commit created. For a given device
//! the notifications therefore arrive in increasing [`Seq`] order, which is
//! what lets a connection push live envelopes without re-reading the queue.
//!
//! [`Seq`]: palaver_proto::Seq

pub mod business;
pub mod chats;
pub mod groups;
pub mod keys;
pub mod policy;
pub mod postgres;
pub mod sqlite;
pub mod store;

#[cfg(test)]
mod store_tests;

pub use store::{
    GroupChangeRequest, GroupSendOutcome, GroupSendRequest, GroupTarget, KeyClaim, LinkOutcome,
    NewDevice, NewGroup, Notifier, PushSettings, ReportRecord, RevokeRequest, SendOutcome,
    SendRequest, StatusOutcome, StatusRequest, Store, StoreError, StoredEnvelope, TimerError,
    TimerRequest, VerifyOutcome,
};
