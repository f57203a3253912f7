//! Revocations: which connections an admin (or a revoked API key) ends, on
//! every instance, and the deny entries that keep their credentials out
//! afterwards. Plain data, sent over the bus as JSON.

use std::{collections::HashMap, sync::Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which connections to revoke: those of `user_id` and/or `session_id`
/// (both given: both must match); with `document_id`, only their membership
/// of that document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    /// A document id (checked by whoever made the revocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_id: Option<String>,
    /// When it was made (unix seconds): tokens issued before it are denied.
    pub at: u64,
}

impl Revocation {
    /// Whether a connection of `user_id` with `session_id` is targeted.
    pub fn matches(&self, user_id: &str, session_id: Uuid) -> bool {
        (self.user_id.is_some() || self.session_id.is_some())
            && self.user_id.as_deref().is_none_or(|user| user == user_id)
            && self.session_id.is_none_or(|session| session == session_id)
    }
}

/// What a denied credential is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Denied {
    /// Every credential of the user issued at or before `before`.
    User { user_id: String, before: u64 },
    /// One token, by fingerprint.
    Credential { fingerprint: String },
}

/// How long a user's older credentials stay denied after a revocation by
/// user, at least: the longest token lifetime tandem assumes (a day), or the
/// latest `exp` among the connections it closed, whichever is later.
pub const USER_DENY_SECS: u64 = 24 * 3600;

impl Revocation {
    /// The deny entries for the connections it closed here (their token
    /// fingerprints and expiries). Document revocations deny nothing: the
    /// user may still connect, just not open that document with this token.
    pub fn deny_entries(&self, closed: &[(Option<String>, Option<u64>)]) -> Vec<DenyEntry> {
        if self.document_id.is_some() {
            return Vec::new();
        }
        match (&self.user_id, self.session_id) {
            (Some(user_id), None) => {
                let latest = closed.iter().filter_map(|(_, exp)| *exp).max().unwrap_or(0);
                vec![DenyEntry {
                    denied: Denied::User {
                        user_id: user_id.clone(),
                        before: self.at,
                    },
                    until: latest.max(self.at + USER_DENY_SECS),
                }]
            }
            (_, Some(_)) => closed
                .iter()
                .filter_map(|(fingerprint, exp)| {
                    Some(DenyEntry {
                        denied: Denied::Credential {
                            fingerprint: fingerprint.clone()?,
                        },
                        until: exp.unwrap_or(self.at + USER_DENY_SECS),
                    })
                })
                .collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// A deny entry and when it lapses (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyEntry {
    pub denied: Denied,
    pub until: u64,
}

/// The credentials refused until their entries lapse. Bounded by the
/// revocations made; lapsed entries are dropped as they are met.
#[derive(Debug, Default)]
pub struct DenyList {
    users: Mutex<HashMap<String, (u64, u64)>>,
    credentials: Mutex<HashMap<String, u64>>,
}

impl DenyList {
    pub fn add(&self, entry: &DenyEntry) {
        match &entry.denied {
            Denied::User { user_id, before } => {
                let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
                let slot = users.entry(user_id.clone()).or_insert((*before, entry.until));
                slot.0 = slot.0.max(*before);
                slot.1 = slot.1.max(entry.until);
            }
            Denied::Credential { fingerprint } => {
                let mut credentials = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
                let until = credentials.entry(fingerprint.clone()).or_insert(entry.until);
                *until = (*until).max(entry.until);
            }
        }
    }

    /// Whether a credential of `user_id`, issued at `issued_at` (unknown:
    /// treated as before any revocation), with `fingerprint`, is denied at `now`.
    pub fn denies(&self, user_id: &str, issued_at: Option<u64>, fingerprint: Option<&str>, now: u64) -> bool {
        {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(&(before, until)) = users.get(user_id) {
                if until <= now {
                    users.remove(user_id);
                } else if issued_at.is_none_or(|iat| iat <= before) {
                    return true;
                }
            }
        }
        let Some(fingerprint) = fingerprint else {
            return false;
        };
        let mut credentials = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        match credentials.get(fingerprint) {
            Some(&until) if until > now => true,
            Some(_) => {
                credentials.remove(fingerprint);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_by_user_session_or_both() {
        let session = Uuid::now_v7();
        let other = Uuid::now_v7();
        let by_user = Revocation {
            user_id: Some("alice".into()),
            session_id: None,
            document_id: None,
            at: 0,
        };
        assert!(by_user.matches("alice", session) && !by_user.matches("bob", session));
        let by_session = Revocation {
            user_id: None,
            session_id: Some(session),
            document_id: None,
            at: 0,
        };
        assert!(by_session.matches("bob", session) && !by_session.matches("bob", other));
        let both = Revocation {
            user_id: Some("alice".into()),
            session_id: Some(session),
            document_id: None,
            at: 0,
        };
        assert!(
            both.matches("alice", session) && !both.matches("bob", session) && !both.matches("alice", other)
        );
        let nothing = Revocation {
            user_id: None,
            session_id: None,
            document_id: None,
            at: 0,
        };
        assert!(!nothing.matches("alice", session));
    }

    #[test]
    fn entries_deny_older_credentials_until_they_lapse() {
        let list = DenyList::default();
        list.add(&DenyEntry {
            denied: Denied::User {
                user_id: "alice".into(),
                before: 100,
            },
            until: 200,
        });
        list.add(&DenyEntry {
            denied: Denied::Credential {
                fingerprint: "f1".into(),
            },
            until: 150,
        });
        assert!(list.denies("alice", Some(90), None, 120));
        assert!(list.denies("alice", None, None, 120));
        assert!(
            !list.denies("alice", Some(101), None, 120),
            "a token issued after the revocation"
        );
        assert!(!list.denies("bob", Some(90), None, 120));
        assert!(list.denies("bob", Some(90), Some("f1"), 120));
        assert!(!list.denies("bob", Some(90), Some("f1"), 150), "lapsed");
        assert!(!list.denies("alice", Some(90), None, 200), "lapsed");
    }
}
