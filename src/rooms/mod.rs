//! Rooms: a document's members and presence, fan-out to them, the hub of
//! every room and connection of this instance, and the document operations
//! (load, apply, diff) every endpoint shares. In memory; what rooms need
//! from storage comes through the traits in `model::log` and
//! `model::presence`, and what they tell other instances through
//! [`events::Publish`].

pub mod app_messages;
pub mod broadcast;
pub mod documents;
pub mod events;
pub mod fanout;
pub mod hub;
pub mod latest;
pub mod member;
pub mod outbox;
pub mod parking;
pub mod presence_change;
pub mod rejoin;
pub mod remote;
pub mod room;
pub mod room_document;
pub mod throttle;
