//! Device type from a User-Agent (uaparser with the uap-core regexes).
//!
//! The parser is built once per process (it compiles several hundred regexes)
//! and results are cached per User-Agent string: most clients of one app send
//! the same few strings. Hostile input is bounded before it reaches a regex.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
};

use serde::{Deserialize, Serialize};
use uaparser::{Parser, UserAgentParser};

use crate::model::text::truncate_utf8;

/// Longest User-Agent kept and parsed; longer ones are cut (and stored cut).
pub const MAX_USER_AGENT_BYTES: usize = 512;
/// Distinct User-Agents remembered before the cache starts over.
const CACHE_CAPACITY: usize = 1024;

/// The kind of device a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    Mobile,
    Tablet,
    Desktop,
    Bot,
    Other,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::Tablet => "tablet",
            Self::Desktop => "desktop",
            Self::Bot => "bot",
            Self::Other => "other",
        }
    }

    pub fn from_db(value: &str) -> Self {
        match value {
            "mobile" => Self::Mobile,
            "tablet" => Self::Tablet,
            "desktop" => Self::Desktop,
            "bot" => Self::Bot,
            _ => Self::Other,
        }
    }
}

static PARSER: LazyLock<Option<UserAgentParser>> = LazyLock::new(|| {
    match UserAgentParser::builder()
        .with_unicode_support(false)
        .build_from_bytes(include_bytes!("../../assets/ua-regexes.yaml"))
    {
        Ok(parser) => Some(parser),
        Err(error) => {
            tracing::error!(%error, "user-agent regexes failed to load; every device is \"other\"");
            None
        }
    }
});

static CACHE: LazyLock<Mutex<HashMap<String, DeviceType>>> = LazyLock::new(Default::default);

/// Build the parser ahead of the first connection (it takes a moment).
pub fn warm_up() {
    LazyLock::force(&PARSER);
}

/// Cut a client-supplied User-Agent to what is stored and parsed.
pub fn bound_user_agent(user_agent: &str) -> &str {
    truncate_utf8(user_agent, MAX_USER_AGENT_BYTES)
}

/// Classify a (bounded) User-Agent.
pub fn detect(user_agent: Option<&str>) -> DeviceType {
    let Some(user_agent) = user_agent
        .map(bound_user_agent)
        .filter(|ua| !ua.trim().is_empty())
    else {
        return DeviceType::Other;
    };
    if let Some(cached) = CACHE.lock().ok().and_then(|cache| cache.get(user_agent).copied()) {
        return cached;
    }
    let device_type = classify(user_agent);
    if let Ok(mut cache) = CACHE.lock() {
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(user_agent.to_owned(), device_type);
    }
    device_type
}

fn classify(user_agent: &str) -> DeviceType {
    let Some(parser) = PARSER.as_ref() else {
        return DeviceType::Other;
    };
    let device = parser.parse_device(user_agent);
    let os = parser.parse_os(user_agent);
    let agent = parser.parse_user_agent(user_agent);
    let device_family = device.family.to_ascii_lowercase();
    let agent_family = agent.family.to_ascii_lowercase();
    let os_family = os.family.as_ref();
    let lower = user_agent.to_ascii_lowercase();

    if device_family == "spider"
        || ["bot", "spider", "crawler"]
            .iter()
            .any(|w| agent_family.contains(w))
    {
        return DeviceType::Bot;
    }
    if device_family.contains("ipad")
        || device_family.contains("tablet")
        || device_family.contains("kindle")
        || lower.contains("tablet")
        || (os_family == "Android" && !lower.contains("mobile"))
    {
        return DeviceType::Tablet;
    }
    if matches!(
        os_family,
        "iOS" | "Android" | "Windows Phone" | "BlackBerry OS" | "KaiOS"
    ) || device_family.contains("iphone")
        || device_family.contains("smartphone")
        || lower.contains("mobile")
    {
        return DeviceType::Mobile;
    }
    if matches!(
        os_family,
        "Windows"
            | "Mac OS X"
            | "Linux"
            | "Ubuntu"
            | "Chrome OS"
            | "Fedora"
            | "FreeBSD"
            | "Debian"
            | "OpenBSD"
    ) || os_family.starts_with("Windows")
    {
        return DeviceType::Desktop;
    }
    DeviceType::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_user_agents_map_to_device_types() {
        let cases = [
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                DeviceType::Mobile,
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
                DeviceType::Mobile,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                DeviceType::Tablet,
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                DeviceType::Tablet,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                DeviceType::Desktop,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
                DeviceType::Desktop,
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                DeviceType::Desktop,
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                DeviceType::Bot,
            ),
            ("python-websockets/12.0", DeviceType::Other),
            ("", DeviceType::Other),
        ];
        for (user_agent, expected) in cases {
            assert_eq!(detect(Some(user_agent)), expected, "{user_agent}");
        }
        assert_eq!(detect(None), DeviceType::Other);
    }

    #[test]
    fn huge_user_agent_is_bounded() {
        let huge = "A".repeat(64 * 1024);
        assert_eq!(bound_user_agent(&huge).len(), MAX_USER_AGENT_BYTES);
        assert_eq!(detect(Some(&huge)), DeviceType::Other);
    }
}
