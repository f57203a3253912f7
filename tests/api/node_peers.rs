//! Real peers of the Yjs ecosystem: npm `yjs` + `y-websocket` WebsocketProviders
//! (with the `ws` package) driven by Node against the real gateway. The pinned
//! packages install themselves (`npm ci`); without Node the test is skipped, with a note.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::*;

/// `tests/node` with its pinned packages installed (`npm ci` on a fresh
/// machine), or `None` with a note when Node or the packages are missing.
async fn node_peers(what: &str) -> Option<std::path::PathBuf> {
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let has_node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_node && !node_dir.join("node_modules/y-websocket").exists() {
        // The pinned peers (package-lock.json) install themselves on a fresh machine.
        let installed = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&node_dir)
            .stdout(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if !installed {
            note(&format!(
                "NOTE: `npm ci --prefix tests/node` failed: {what} is SKIPPED"
            ));
        }
    }
    if !has_node || !node_dir.join("node_modules/y-websocket").exists() {
        note(&format!(
            "NOTE: node or tests/node/node_modules missing: {what} is SKIPPED"
        ));
        return None;
    }
    Some(node_dir)
}

#[tokio::test]
async fn stock_websocket_providers_converge_share_presence_and_survive_a_restart() {
    let Some(node_dir) = node_peers("the y-websocket provider test").await else {
        return;
    };
    let database = TestDatabase::create(&Backend::Sqlite).await;
    let app = spawn_app_on(database, |c| c.heartbeat_interval = Duration::from_secs(5)).await;
    let port = app.addr.port();
    let tokens = [
        app.token("provider-a"),
        app.token("provider-b"),
        app.token_with("json-user", |c| c.name = Some("Jay".into())),
    ];

    let mut node = tokio::process::Command::new("node")
        .arg(node_dir.join("providers.mjs"))
        .arg(port.to_string())
        .args(&tokens)
        .current_dir(&node_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut stdout = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut stdin = node.stdin.take().unwrap();

    let line = tokio::time::timeout(Duration::from_secs(90), stdout.next_line())
        .await
        .expect("node phase 1")
        .unwrap();
    assert_eq!(
        line.as_deref(),
        Some("restart"),
        "node phase 1 failed (see its stderr)"
    );
    let database = app.shutdown().await;
    let _restarted = spawn_app_on(database, move |c| {
        c.bind = format!("127.0.0.1:{port}").parse().unwrap()
    })
    .await;
    stdin.write_all(b"go\n").await.unwrap();

    let line = tokio::time::timeout(Duration::from_secs(90), stdout.next_line())
        .await
        .expect("node phase 2")
        .unwrap();
    assert_eq!(
        line.as_deref(),
        Some("ok"),
        "node phase 2 failed (see its stderr)"
    );
    assert!(node.wait().await.unwrap().success());
}

/// `GET .../json` equals what npm `yjs` renders for every root shape, for a
/// document written by y-websocket providers too; ops reach connected
/// providers and merge with their concurrent edits (tests/node/json-reads.mjs).
#[tokio::test]
async fn json_reads_and_ops_match_npm_yjs() {
    let Some(node_dir) = node_peers("the JSON read test against npm yjs").await else {
        return;
    };
    let app = spawn_app().await;
    let viewer = app.token_with("val", |c| c.role = tandem::auth::Role::Viewer);
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(node_dir.join("json-reads.mjs"))
            .arg(app.addr.port().to_string())
            .args([app.token("agent"), app.token("browser"), viewer])
            .current_dir(&node_dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node finished")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("ok"),
        "json-reads.mjs failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
