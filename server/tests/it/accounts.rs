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
