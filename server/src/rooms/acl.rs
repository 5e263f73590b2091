//! Server access control lists (`m.room.server_acl`): which servers a room lets take part.
//! Federation asks before it answers a request about a room, takes a PDU or an EDU from an
//! origin, or sends a room's events to a destination.

use ruma::{RoomId, ServerName, events::StateEventType};

use super::Rooms;
use crate::{Error, Result};

/// Whether an ACL content (`allow`, `deny`, `allow_ip_literals`) lets `server` in. A content
/// that does not parse as an ACL allows every server: the room's state, not garbage in it,
/// decides who may take part.
pub fn acl_allows(content: &str, server: &ServerName) -> bool {
    match serde_json::from_str::<ruma::events::room::server_acl::RoomServerAclEventContent>(content)
    {
        Ok(acl) => acl.is_allowed(server),
        Err(_) => true,
    }
}

impl Rooms {
    /// Whether the current server ACL of `room` lets `server` take part (true when the room
    /// has none, or this node does not know the room).
    pub async fn server_allowed(&self, room: &RoomId, server: &ServerName) -> Result<bool> {
        let acl = match self
            .current_state_event(room, &StateEventType::RoomServerAcl, "")
            .await
        {
            Ok(acl) => acl,
            Err(Error::NotFound(_)) => return Ok(true),
            Err(e) => return Err(e),
        };
        Ok(acl.is_none_or(|acl| acl_allows(acl.content.get(), server)))
    }
}
