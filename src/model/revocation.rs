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

/// The credential a connection holds now (updated by `refresh_token`): what
/// a revocation needs to deny it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub fingerprint: Option<String>,
    pub issued_at: Option<u64>,
    pub expires_at: Option<u64>,
}

/// What a denied credential is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Denied {
    /// Every credential of the user issued at or before `before`.
    User { user_id: String, before: u64 },
    /// One token, by fingerprint.
    Credential { fingerprint: String },
    /// The user's credentials issued at or before `before`, for one document.
    UserDocument {
        user_id: String,
        document_id: String,
        before: u64,
    },
    /// One token, for one document.
    CredentialDocument {
        fingerprint: String,
        document_id: String,
    },
}

/// How long a user's older credentials stay denied after a revocation by
/// user, at least: the longest token lifetime tandem assumes (a day), or the
/// latest `exp` among the connections it closed, whichever is later.
pub const USER_DENY_SECS: u64 = 24 * 3600;

impl Revocation {
    /// The deny entries for the credentials of the connections it targeted
    /// here: by user (older tokens) or by session (those tokens), for every
    /// document or for its document only.
    pub fn deny_entries(&self, targeted: &[Credential]) -> Vec<DenyEntry> {
        let latest = targeted.iter().filter_map(|c| c.expires_at).max().unwrap_or(0);
        let by_user_until = latest.max(self.at + USER_DENY_SECS);
        match (&self.user_id, self.session_id, &self.document_id) {
            (Some(user_id), None, None) => vec![DenyEntry {
                denied: Denied::User {
                    user_id: user_id.clone(),
                    before: self.at,
                },
                until: by_user_until,
            }],
            (Some(user_id), None, Some(document_id)) => vec![DenyEntry {
                denied: Denied::UserDocument {
                    user_id: user_id.clone(),
                    document_id: document_id.clone(),
                    before: self.at,
                },
                until: by_user_until,
            }],
            (_, Some(_), document_id) => targeted
                .iter()
                .filter_map(|credential| {
                    let fingerprint = credential.fingerprint.clone()?;
                    Some(DenyEntry {
                        denied: match document_id {
                            None => Denied::Credential { fingerprint },
                            Some(document_id) => Denied::CredentialDocument {
                                fingerprint,
                                document_id: document_id.clone(),
                            },
                        },
                        until: credential.expires_at.unwrap_or(self.at + USER_DENY_SECS),
                    })
                })
                .collect(),
            (None, None, _) => Vec::new(),
        }
    }
}

/// A deny entry and when it lapses (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyEntry {
    pub denied: Denied,
    pub until: u64,
}

/// Who a deny-list row is about, and for which document ("" for all).
type Subject = (String, String);

/// The credentials refused until their entries lapse: by user (issued at or
/// before a time) and by token fingerprint, for every document or one.
/// Lapsed entries are dropped when met and by [`DenyList::prune`].
#[derive(Debug, Default)]
pub struct DenyList {
    /// (user id, document) -> (issued at or before, until).
    users: Mutex<HashMap<Subject, (u64, u64)>>,
    /// (fingerprint, document) -> until.
    credentials: Mutex<HashMap<Subject, u64>>,
}

impl DenyList {
    pub fn add(&self, entry: &DenyEntry) {
        let (user, credential) = match &entry.denied {
            Denied::User { user_id, before } => (Some(((user_id.clone(), String::new()), *before)), None),
            Denied::UserDocument {
                user_id,
                document_id,
                before,
            } => (Some(((user_id.clone(), document_id.clone()), *before)), None),
            Denied::Credential { fingerprint } => (None, Some((fingerprint.clone(), String::new()))),
            Denied::CredentialDocument {
                fingerprint,
                document_id,
            } => (None, Some((fingerprint.clone(), document_id.clone()))),
        };
        if let Some((subject, before)) = user {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            let slot = users.entry(subject).or_insert((before, entry.until));
            slot.0 = slot.0.max(before);
            slot.1 = slot.1.max(entry.until);
        }
        if let Some(subject) = credential {
            let mut credentials = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
            let until = credentials.entry(subject).or_insert(entry.until);
            *until = (*until).max(entry.until);
        }
    }

    /// Whether `user_id`'s `credential` is denied at `now`, everywhere.
    pub fn denies(&self, user_id: &str, credential: &Credential, now: u64) -> bool {
        self.denies_in(user_id, credential, "", now)
    }

    /// Whether `user_id`'s `credential` may not open `document_id` at `now`
    /// (denied everywhere, or for that document).
    pub fn denies_document(
        &self,
        user_id: &str,
        credential: &Credential,
        document_id: &str,
        now: u64,
    ) -> bool {
        self.denies_in(user_id, credential, "", now) || self.denies_in(user_id, credential, document_id, now)
    }

    fn denies_in(&self, user_id: &str, credential: &Credential, document_id: &str, now: u64) -> bool {
        {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            let subject = (user_id.to_owned(), document_id.to_owned());
            if let Some(&(before, until)) = users.get(&subject) {
                if until <= now {
                    users.remove(&subject);
                } else if credential.issued_at.is_none_or(|iat| iat <= before) {
                    // A credential that does not say when it was issued counts as older.
                    return true;
                }
            }
        }
        let Some(fingerprint) = &credential.fingerprint else {
            return false;
        };
        let mut credentials = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        let subject = (fingerprint.clone(), document_id.to_owned());
        match credentials.get(&subject) {
            Some(&until) if until > now => true,
            Some(_) => {
                credentials.remove(&subject);
                false
            }
            None => false,
        }
    }

    /// Drop the entries that lapsed by `now`.
    pub fn prune(&self, now: u64) {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (_, until)| *until > now);
        self.credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }

    /// Entries held (for tests and `/stats`).
    pub fn len(&self) -> usize {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self.credentials.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let credential = |iat: Option<u64>, fingerprint: Option<&str>| Credential {
            fingerprint: fingerprint.map(str::to_owned),
            issued_at: iat,
            expires_at: None,
        };
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
        assert!(list.denies("alice", &credential(Some(90), None), 120));
        assert!(list.denies("alice", &credential(None, None), 120));
        assert!(
            !list.denies("alice", &credential(Some(101), None), 120),
            "a token issued after the revocation"
        );
        assert!(!list.denies("bob", &credential(Some(90), None), 120));
        assert!(list.denies("bob", &credential(Some(90), Some("f1")), 120));
        assert!(
            !list.denies("bob", &credential(Some(90), Some("f1")), 150),
            "lapsed"
        );
        assert!(!list.denies("alice", &credential(Some(90), None), 200), "lapsed");
    }

    #[test]
    fn document_entries_deny_that_document_only_and_prune_drops_lapsed_entries() {
        let list = DenyList::default();
        let old = Credential {
            fingerprint: Some("f2".into()),
            issued_at: Some(90),
            expires_at: Some(500),
        };
        list.add(&DenyEntry {
            denied: Denied::UserDocument {
                user_id: "alice".into(),
                document_id: "doc-a".into(),
                before: 100,
            },
            until: 300,
        });
        list.add(&DenyEntry {
            denied: Denied::CredentialDocument {
                fingerprint: "f3".into(),
                document_id: "doc-b".into(),
            },
            until: 400,
        });
        assert!(list.denies_document("alice", &old, "doc-a", 120));
        assert!(!list.denies_document("alice", &old, "doc-b", 120));
        assert!(!list.denies("alice", &old, 120), "connecting is still allowed");
        let f3 = Credential {
            fingerprint: Some("f3".into()),
            issued_at: Some(500),
            expires_at: None,
        };
        assert!(list.denies_document("carol", &f3, "doc-b", 120));
        assert_eq!(list.len(), 2);
        list.prune(350);
        assert_eq!(list.len(), 1);
        list.prune(400);
        assert!(list.is_empty());
    }

    #[test]
    fn deny_entries_follow_the_target() {
        let at = 1_000;
        let targeted = [Credential {
            fingerprint: Some("f".into()),
            issued_at: Some(900),
            expires_at: Some(5_000),
        }];
        let revocation = |user: Option<&str>, session: bool, document: Option<&str>| Revocation {
            user_id: user.map(str::to_owned),
            session_id: session.then(Uuid::now_v7),
            document_id: document.map(str::to_owned),
            at,
        };
        let by_user = revocation(Some("alice"), false, None).deny_entries(&targeted);
        assert_eq!(
            by_user[0].denied,
            Denied::User {
                user_id: "alice".into(),
                before: at
            }
        );
        assert_eq!(by_user[0].until, at + USER_DENY_SECS);
        let by_session = revocation(None, true, None).deny_entries(&targeted);
        assert_eq!(
            by_session,
            vec![DenyEntry {
                denied: Denied::Credential {
                    fingerprint: "f".into()
                },
                until: 5_000
            }]
        );
        let document = revocation(Some("alice"), false, Some("d")).deny_entries(&targeted);
        assert!(
            matches!(&document[0].denied, Denied::UserDocument { document_id, .. } if document_id == "d")
        );
        let session_document = revocation(None, true, Some("d")).deny_entries(&targeted);
        assert!(
            matches!(&session_document[0].denied, Denied::CredentialDocument { document_id, .. } if document_id == "d")
        );
    }
}
