//! Verbs for driving Grove nodes with Element X's engine, `matrix-sdk` and `matrix-sdk-ui`:
//! register and log in with a password, start the sync service, wait with a time limit, wait
//! for a timeline to show an event.
//!
//! The node under test is named by `GROVE_URL` (the root package's `tests/it/sdk.rs` starts
//! nodes and runs this crate's tests against them). The clients keep their stores in memory.

use std::{future::Future, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use matrix_sdk::{
    Client,
    ruma::{
        OwnedUserId,
        api::client::{account::register, uiaa},
    },
};
use matrix_sdk_ui::{
    sync_service::SyncService,
    timeline::{EventTimelineItem, Timeline},
};

/// How long any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Every test user's password; every user is fresh, so a shared one leaks nothing.
pub const PASSWORD: &str = "grove sdk test password";

/// The node under test, from `GROVE_URL`.
pub fn base_url() -> Result<String> {
    std::env::var("GROVE_URL")
        .map(|u| u.trim_end_matches('/').to_owned())
        .map_err(|_| {
            anyhow!("GROVE_URL is not set: run these tests through `cargo test --test it sdk`")
        })
}

/// Installs a log subscriber writing to the test output (once per process).
pub fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GROVE_SDK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A client of the node under test, not logged in, with in-memory stores.
pub async fn client() -> Result<Client> {
    Ok(Client::builder()
        .homeserver_url(base_url()?)
        .build()
        .await?)
}

/// A localpart no other test run uses.
pub fn unique(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}{nanos}")
}

/// Registers `localpart` with [`PASSWORD`] through user-interactive auth (`m.login.dummy`).
pub async fn register(localpart: &str) -> Result<OwnedUserId> {
    let client = client().await?;
    let mut request = register::v3::Request::new();
    request.username = Some(localpart.to_owned());
    request.password = Some(PASSWORD.to_owned());
    request.inhibit_login = true;
    let session = match client.matrix_auth().register(request.clone()).await {
        Ok(done) => return Ok(done.user_id),
        Err(e) => e
            .as_uiaa_response()
            .and_then(|info| info.session.clone())
            .with_context(|| format!("register {localpart}: {e}"))?,
    };
    let mut dummy = uiaa::Dummy::new();
    dummy.session = Some(session);
    request.auth = Some(uiaa::AuthData::Dummy(dummy));
    let done = client
        .matrix_auth()
        .register(request)
        .await
        .with_context(|| format!("register {localpart}"))?;
    Ok(done.user_id)
}

/// A new device of `user`, logged in with [`PASSWORD`].
pub async fn login(user: &OwnedUserId) -> Result<Client> {
    let client = client().await?;
    client
        .matrix_auth()
        .login_username(user, PASSWORD)
        .initial_device_display_name("grove sdk test")
        .await
        .with_context(|| format!("log in {user}"))?;
    Ok(client)
}

/// A fresh user, registered and logged in.
pub async fn new_user(prefix: &str) -> Result<Client> {
    let user = register(&unique(prefix)).await?;
    login(&user).await
}

/// Awaits `what` for at most [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(WAIT, future).await {
        Ok(result) => result.with_context(|| what.to_owned()),
        Err(_) => bail!("timed out after {WAIT:?}: {what}"),
    }
}

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(50);

/// Asks `probe` every [`POLL`] until it gives a value, for at most [`WAIT`].
pub async fn eventually<T>(
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    within(what, async {
        loop {
            if let Some(found) = probe().await? {
                return Ok(found);
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// Element X's sync service for `client` (the room list and the encryption sync), started.
pub async fn start_sync(client: &Client) -> Result<SyncService> {
    let sync = SyncService::builder(client.clone()).build().await?;
    sync.start().await;
    Ok(sync)
}

/// Waits until `timeline` shows an event for which `found` holds, and returns it.
pub async fn event_where(
    timeline: &Timeline,
    what: &str,
    found: impl Fn(&EventTimelineItem) -> bool,
) -> Result<EventTimelineItem> {
    eventually(what, async || {
        Ok(timeline
            .items()
            .await
            .iter()
            .filter_map(|item| item.as_event())
            .find(|event| found(event))
            .cloned())
    })
    .await
}

/// The body of a message event (None for anything else, an undecryptable event included).
pub fn body(event: &EventTimelineItem) -> Option<&str> {
    event.content().as_message().map(|m| m.body())
}
