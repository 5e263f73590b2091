//! Tests of accounts in the server core: registration, tokens, devices and device-list changes.

use grove_server::{
    Error, Homeserver, NodeKey, ServerConfig, StreamPosition,
    accounts::{NewAccount, NewDevice},
    storage::Backend,
    testing::TestDb,
};
use ruma::{api::client::uiaa::AuthData, device_id};

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

async fn open(db: &TestDb) -> Homeserver {
    let key = NodeKey::generate().expect("key");
    let config = ServerConfig::new(key.server_name(), db.url.clone());
    Homeserver::open(config, key).await.expect("open")
}

fn dummy() -> AuthData {
    AuthData::Dummy(Default::default())
}

#[tokio::test]
async fn register_authenticate_and_delete_devices() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let hs = open(&db).await;
        let accounts = &hs.accounts;

        // Without auth, registration answers with the flows to follow.
        let account = NewAccount {
            username: Some("alice".into()),
            password: Some("secret".into()),
            ..Default::default()
        };
        let err = accounts.register(account.clone(), None).await.unwrap_err();
        assert!(matches!(err, Error::UiaRequired(_)), "{err:?}");

        let before = hs.notifier.current();
        let done = accounts
            .register(account.clone(), Some(&dummy()))
            .await
            .expect("register");
        let login = done.login.expect("logged in");
        assert!(
            hs.notifier.current() > before,
            "device creation takes a position"
        );
        let session = accounts
            .authenticate(&login.access_token)
            .await
            .expect("token");
        assert_eq!(session.user_id, done.user_id);
        assert!(matches!(
            accounts.register(account, Some(&dummy())).await,
            Err(Error::UserInUse)
        ));
        assert!(matches!(
            accounts.authenticate("grv_nope").await,
            Err(Error::UnknownToken)
        ));

        assert!(
            accounts
                .check_password(&done.user_id, "secret")
                .await
                .unwrap()
        );
        assert!(
            !accounts
                .check_password(&done.user_id, "Secret")
                .await
                .unwrap()
        );
        let second = accounts
            .login_password(
                "alice",
                "secret",
                NewDevice {
                    device_id: Some(device_id!("SECOND").to_owned()),
                    ..Default::default()
                },
            )
            .await
            .expect("login");
        assert_eq!(accounts.devices(&done.user_id).await.unwrap().len(), 2);

        let changes_from = hs.notifier.current();
        accounts.logout(&session).await.expect("logout");
        assert!(matches!(
            accounts.authenticate(&login.access_token).await,
            Err(Error::UnknownToken)
        ));
        accounts
            .authenticate(&second.access_token)
            .await
            .expect("other device kept");
        let changed = hs
            .e2ee
            .users_with_key_changes(changes_from, hs.notifier.current())
            .await
            .expect("changes");
        assert_eq!(changed, vec![done.user_id.clone()]);
        assert_eq!(
            hs.e2ee
                .users_with_key_changes(hs.notifier.current(), hs.notifier.current())
                .await
                .expect("changes"),
            Vec::<ruma::OwnedUserId>::new()
        );

        accounts
            .change_password(&done.user_id, "newer", true, None)
            .await
            .expect("password");
        assert!(accounts.devices(&done.user_id).await.unwrap().is_empty());
        assert!(matches!(
            accounts
                .login_password("alice", "secret", NewDevice::default())
                .await,
            Err(Error::InvalidCredentials)
        ));
        accounts
            .login_password("alice", "newer", NewDevice::default())
            .await
            .expect("new password");
        assert!(hs.notifier.current() > StreamPosition(0));
        hs.close().await;
    }
}

fn password_auth(user: &str, password: &str, session: Option<String>) -> AuthData {
    let mut auth = ruma::api::client::uiaa::Password::new(
        ruma::api::client::uiaa::UserIdentifier::Matrix(
            ruma::api::client::uiaa::MatrixUserIdentifier::new(user.to_owned()),
        ),
        password.to_owned(),
    );
    auth.session = session;
    AuthData::Password(auth)
}

#[tokio::test]
async fn password_uia_sessions_and_limits() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let hs = open(&db).await;
        let accounts = &hs.accounts;
        let done = accounts
            .register(
                NewAccount {
                    username: Some("bob".into()),
                    password: Some("pw".into()),
                    inhibit_login: true,
                    ..Default::default()
                },
                Some(&dummy()),
            )
            .await
            .expect("register");
        assert!(done.login.is_none());
        let user = done.user_id;
        let flows = accounts.password_flows(&user).await.expect("flows");

        let Err(Error::UiaRequired(body)) = accounts.check_uia(Some(&user), &flows, None).await
        else {
            panic!("expected a uia challenge");
        };
        let session = body["session"].as_str().map(str::to_owned);
        assert_eq!(body["flows"][0]["stages"][0], "m.login.password");

        // A wrong password keeps the session open and says M_FORBIDDEN.
        let Err(Error::UiaRequired(body)) = accounts
            .check_uia(
                Some(&user),
                &flows,
                Some(&password_auth("bob", "no", session.clone())),
            )
            .await
        else {
            panic!("expected a refusal");
        };
        assert_eq!(body["errcode"], "M_FORBIDDEN");
        assert_eq!(body["session"].as_str(), session.as_deref());

        // Another user cannot finish bob's session with their own password.
        let other = accounts.resolve_user("mallory").expect("user id");
        assert!(matches!(
            accounts
                .check_uia(
                    Some(&other),
                    &flows,
                    Some(&password_auth("bob", "pw", session.clone()))
                )
                .await,
            Err(Error::UiaRequired(_))
        ));

        accounts
            .check_uia(
                Some(&user),
                &flows,
                Some(&password_auth(user.as_str(), "pw", session.clone())),
            )
            .await
            .expect("password accepted");
        // The session is spent.
        let Err(Error::UiaRequired(body)) = accounts
            .check_uia(
                Some(&user),
                &flows,
                Some(&password_auth("bob", "pw", session)),
            )
            .await
        else {
            panic!("spent session must not pass");
        };
        assert_eq!(body["errcode"], "M_UNKNOWN");

        for bad in ["", "UPPER", "sp ace", "ü"] {
            assert!(
                matches!(accounts.user_id_for(bad), Err(Error::InvalidUsername(_))),
                "{bad:?}"
            );
        }
        assert!(accounts.user_id_for("a.b_c=d-e/f+g").is_ok());
        assert!(matches!(
            accounts.username_available("bob").await,
            Err(Error::UserInUse)
        ));

        let key = "@bob:rate";
        let mut refused = None;
        for _ in 0..50 {
            if let Err(limited) = accounts.rate_limit(grove_server::accounts::Attempt::Login, key) {
                refused = Some(limited);
                break;
            }
        }
        let limited = refused.expect("the login bucket empties");
        assert!(limited.retry_after_ms() > 0);
        // Other keys are unaffected.
        accounts
            .rate_limit(grove_server::accounts::Attempt::Login, "@other:rate")
            .expect("separate bucket");
        hs.close().await;
    }
}

#[tokio::test]
async fn turn_credentials_follow_the_rest_api_scheme() {
    use base64::Engine;
    use hmac::{Hmac, Mac};

    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let key = NodeKey::generate().expect("key");
        let mut config = ServerConfig::new(key.server_name(), db.url.clone());
        let user = ruma::UserId::parse(format!("@alice:{}", key.server_name())).expect("user");

        let hs = Homeserver::open(config.clone(), NodeKey::generate().expect("key"))
            .await
            .expect("open");
        assert_eq!(hs.accounts.turn_credentials(&user).expect("turn"), None);
        hs.close().await;

        config.turn_uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
        config.turn_shared_secret = Some("s3cret".into());
        config.turn_ttl_secs = 600;
        let hs = Homeserver::open(config, key).await.expect("open");
        let turn = hs
            .accounts
            .turn_credentials(&user)
            .expect("turn")
            .expect("configured");
        let (expiry, name) = turn.username.split_once(':').expect("expiry:user");
        assert_eq!(name, user.as_str());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let expiry: u64 = expiry.parse().expect("number");
        assert!(
            (now + 590..=now + 610).contains(&expiry),
            "{expiry} vs {now}"
        );
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").expect("hmac");
        mac.update(turn.username.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(turn.password, want);
        assert_eq!(turn.ttl_secs, 600);
        hs.close().await;
    }
}

#[tokio::test]
async fn a_full_to_device_inbox_refuses_senders_until_the_device_syncs() {
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let key = NodeKey::generate().expect("key");
        let mut config = ServerConfig::new(key.server_name(), db.url.clone());
        config.max_to_device_inbox = 2;
        let hs = Homeserver::open(config, key).await.expect("open");
        let mut logins = Vec::new();
        for name in ["alice", "bob"] {
            let account = NewAccount {
                username: Some(name.into()),
                password: Some("secret".into()),
                ..Default::default()
            };
            let done = hs
                .accounts
                .register(account, Some(&dummy()))
                .await
                .expect("register");
            logins.push(done.login.expect("logged in"));
        }
        let (alice, bob) = (&logins[0], &logins[1]);
        let send = |txn: &'static str| {
            let messages = std::collections::BTreeMap::from([(
                bob.user_id.clone(),
                vec![(
                    grove_server::e2ee::Target::Device(bob.device_id.to_string()),
                    serde_json::json!({ "n": txn }),
                )],
            )]);
            let hs = hs.clone();
            let (user, device) = (alice.user_id.clone(), alice.device_id.clone());
            async move {
                hs.e2ee
                    .send_to_device(&user, &device, "m.test", txn, &messages)
                    .await
            }
        };
        send("t1").await.expect("first fits");
        send("t2").await.expect("second fits");
        let err = send("t3").await.expect_err("inbox is full");
        assert!(
            matches!(err, Error::LimitExceeded(_)),
            "{backend:?}: {err:?}"
        );

        let upto = hs.notifier.current();
        let inbox = hs
            .e2ee
            .sync_to_device(&bob.user_id, &bob.device_id, StreamPosition(0), upto)
            .await
            .expect("sync");
        assert_eq!(
            inbox.len(),
            2,
            "{backend:?}: the refused request stored nothing"
        );

        // Acknowledging the messages (the next sync's `since`) empties the inbox; the refused
        // transaction was not recorded, so the same ID goes through now.
        hs.e2ee
            .sync_to_device(&bob.user_id, &bob.device_id, upto, upto)
            .await
            .expect("ack");
        send("t3").await.expect("fits after the device synced");
    }
}
