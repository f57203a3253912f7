//! App messages: `broadcast` to a document's JSON members and `direct`
//! messages to every connection of a user, here and (through
//! [`crate::rooms::events::Publish`]) on the other instances. Ephemeral:
//! encoded once, queued without waiting, never stored.

use uuid::Uuid;

use crate::{
    protocol::json::{AppData, ServerMessage},
    rooms::{events::RoomEvent, hub::Hub, room::Room},
};

/// Who sent an app message: a member's connection, or a backend over REST
/// (no connection).
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub user_id: &'a str,
    pub connection_id: Option<Uuid>,
}

/// Send `event` to the room's JSON members on this instance, the sender's
/// connection excepted; how many got it.
pub fn broadcast_here(
    room: &Room,
    event: &str,
    data: &AppData,
    user_id: &str,
    connection_id: Option<Uuid>,
) -> usize {
    let text = ServerMessage::Broadcast {
        document_id: &room.id,
        event,
        data,
        user_id,
        connection_id,
    }
    .encode();
    room.state().broadcast(&text, connection_id)
}

/// [`broadcast_here`], and the same on every other instance.
pub fn broadcast(hub: &Hub, room: &Room, event: &str, data: &AppData, from: Sender<'_>) -> usize {
    let delivered = broadcast_here(room, event, data, from.user_id, from.connection_id);
    hub.cluster.publish(
        &room.id,
        RoomEvent::Broadcast {
            event: event.to_owned(),
            data: data.json().to_owned(),
            user_id: from.user_id.to_owned(),
            connection_id: from.connection_id,
        },
    );
    delivered
}

/// Send `event` to this instance's JSON connections of `user_id`; how many.
pub fn direct_here(hub: &Hub, user_id: &str, event: &str, data: &AppData, from: Sender<'_>) -> usize {
    let text = ServerMessage::Direct {
        from_user_id: from.user_id,
        from_connection_id: from.connection_id,
        event,
        data,
    }
    .encode();
    hub.send_to_user(user_id, &text)
}

/// A room among `rooms` where `user_id` is a member (on any instance), if any:
/// a direct message between members of one document travels on its channel.
pub fn shared_room<'a>(
    rooms: impl IntoIterator<Item = &'a std::sync::Arc<Room>>,
    user_id: &str,
) -> Option<&'a std::sync::Arc<Room>> {
    rooms
        .into_iter()
        .find(|room| room.state().devices_of(user_id) > 0)
}

/// [`direct_here`], and the same on every other instance (through the shared
/// room's channel, which every instance hears).
pub fn direct(
    hub: &Hub,
    shared: &Room,
    user_id: &str,
    event: &str,
    data: &AppData,
    from: Sender<'_>,
) -> usize {
    let delivered = direct_here(hub, user_id, event, data, from);
    hub.cluster.publish(
        &shared.id,
        RoomEvent::Direct {
            to_user_id: user_id.to_owned(),
            event: event.to_owned(),
            data: data.json().to_owned(),
            from_user_id: from.user_id.to_owned(),
            from_connection_id: from.connection_id,
        },
    );
    delivered
}
