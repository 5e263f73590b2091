//! Accounts over HTTP: registration (open, token, closed), login, whoami, logout, devices,
//! password change and the login rate limit.

use grove::config::RegistrationMode;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{BACKENDS, TestNode};

const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";
const PASSWORD: &str = "correct horse battery";

fn login_body(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    })
}

#[track_caller]
fn check_error(got: (StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["errcode"], errcode, "{}", got.1);
}

#[tokio::test]
async fn register_with_dummy_auth_then_whoami() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let body = json!({ "username": "alice", "password": PASSWORD,
                           "initial_device_display_name": "phone" });
        let (status, uia) = node.post(REGISTER, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
        assert_eq!(uia["flows"], json!([{ "stages": ["m.login.dummy"] }]));
        let session = uia["session"].as_str().expect("session");

        // A stage not offered is refused and the session stays usable.
        let mut wrong = body.clone();
        wrong["auth"] = json!({ "type": "m.login.registration_token", "token": "x",
                                "session": session });
        let (status, again) = node.post(REGISTER, None, wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{again}");
        assert_eq!(again["errcode"], "M_UNRECOGNIZED");

        let mut done = body.clone();
        done["auth"] = json!({ "type": "m.login.dummy", "session": session });
        let (status, reg) = node.post(REGISTER, None, done).await;
        assert_eq!(status, StatusCode::OK, "{reg}");
        let user_id = format!("@alice:{}", node.server_name());
        assert_eq!(reg["user_id"], user_id.as_str());
        let token = reg["access_token"].as_str().expect("token");

        let (status, me) = node.get(WHOAMI, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["user_id"], user_id.as_str());
        assert_eq!(me["device_id"], reg["device_id"]);

        // The finished session cannot be replayed to register someone else.
        let replay = json!({ "username": "mallory", "password": PASSWORD,
                             "auth": { "type": "m.login.dummy", "session": session } });
        let (status, body) = node.post(REGISTER, None, replay).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["errcode"], "M_UNKNOWN");
    }
}

#[tokio::test]
async fn register_starting_from_an_empty_body() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        // Some clients first ask for the flows with an empty body.
        let (status, uia) = node.post(REGISTER, None, json!({})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
        let body = json!({ "username": "zoe", "password": PASSWORD, "device_id": "ZOEPHONE",
                           "auth": { "type": "m.login.dummy", "session": uia["session"] } });
        let (status, done) = node.post(REGISTER, None, body).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["device_id"], "ZOEPHONE");
        let token = done["access_token"].as_str().expect("token");
        let (_, devices) = node.get("/_matrix/client/v3/devices", Some(token)).await;
        assert_eq!(devices["devices"][0]["device_id"], "ZOEPHONE");
    }
}

#[tokio::test]
async fn register_rejects_taken_and_invalid_names() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        node.register("bob").await;
        let (status, body) = node
            .get("/_matrix/client/v3/register/available?username=carol", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["available"], true);
        check_error(
            node.get("/_matrix/client/v3/register/available?username=bob", None)
                .await,
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
        );
        check_error(
            node.get("/_matrix/client/v3/register/available?username=B%20b", None)
                .await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_USERNAME",
        );
        check_error(
            node.post(
                REGISTER,
                None,
                json!({ "username": "bob", "password": "x" }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
        );
        check_error(
            node.post(
                REGISTER,
                None,
                json!({ "username": "Bad!", "password": "x" }),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_USERNAME",
        );
    }
}

#[tokio::test]
async fn register_in_token_mode_and_closed_mode() {
    for backend in BACKENDS {
        let node = TestNode::start_with_registration(
            backend,
            RegistrationMode::Token,
            vec!["letmein".into()],
        )
        .await;
        let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
        let (status, body) = node.get(&format!("{validity}?token=letmein"), None).await;
        assert_eq!(
            (status, body["valid"].clone()),
            (StatusCode::OK, json!(true))
        );
        let (status, body) = node.get(&format!("{validity}?token=nope"), None).await;
        assert_eq!(
            (status, body["valid"].clone()),
            (StatusCode::OK, json!(false))
        );

        let body = json!({ "username": "dave", "password": PASSWORD });
        let (status, uia) = node.post(REGISTER, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
        assert_eq!(
            uia["flows"],
            json!([{ "stages": ["m.login.registration_token"] }])
        );
        let session = uia["session"].as_str().expect("session").to_owned();
        let mut attempt = body.clone();
        attempt["auth"] = json!({ "type": "m.login.dummy", "session": session });
        let (status, refused) = node.post(REGISTER, None, attempt).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
        let mut attempt = body.clone();
        attempt["auth"] = json!({ "type": "m.login.registration_token", "token": "nope",
                                  "session": session });
        let (status, refused) = node.post(REGISTER, None, attempt).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
        assert_eq!(refused["errcode"], "M_FORBIDDEN");
        let mut attempt = body.clone();
        attempt["auth"] = json!({ "type": "m.login.registration_token", "token": "letmein",
                                  "session": session });
        let (status, done) = node.post(REGISTER, None, attempt).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert!(done["access_token"].is_string());

        let closed =
            TestNode::start_with_registration(backend, RegistrationMode::Closed, Vec::new()).await;
        check_error(
            closed
                .post(
                    REGISTER,
                    None,
                    json!({ "username": "eve", "password": PASSWORD }),
                )
                .await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
    }
}

#[tokio::test]
async fn register_with_inhibit_login_gives_no_token() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let body = json!({ "username": "frank", "password": PASSWORD, "inhibit_login": true,
                           "auth": { "type": "m.login.dummy" } });
        let (status, done) = node.post(REGISTER, None, body).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert!(done.get("access_token").is_none(), "{done}");
        let (status, login) = node.post(LOGIN, None, login_body("frank", PASSWORD)).await;
        assert_eq!(status, StatusCode::OK, "{login}");
    }
}

#[tokio::test]
async fn login_logout_and_logout_all() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let (status, types) = node.get(LOGIN, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(types["flows"][0]["type"], "m.login.password");

        check_error(
            node.post(LOGIN, None, login_body("alice", "wrong")).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        check_error(
            node.post(LOGIN, None, login_body("nobody", PASSWORD)).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        let mut with_device = login_body(&alice.user_id, PASSWORD);
        with_device["device_id"] = json!("LAPTOP");
        let (status, laptop) = node.post(LOGIN, None, with_device).await;
        assert_eq!(status, StatusCode::OK, "{laptop}");
        assert_eq!(laptop["device_id"], "LAPTOP");
        assert_eq!(laptop["user_id"], alice.user_id.as_str());
        // The legacy `user` field still works.
        let legacy = json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD });
        let (status, tablet) = node.post(LOGIN, None, legacy).await;
        assert_eq!(status, StatusCode::OK, "{tablet}");
        let laptop = laptop["access_token"].as_str().expect("token").to_owned();
        let tablet = tablet["access_token"].as_str().expect("token").to_owned();

        let (status, _) = node
            .post("/_matrix/client/v3/logout", Some(&laptop), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        check_error(
            node.get(WHOAMI, Some(&laptop)).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
        assert_eq!(node.get(WHOAMI, Some(&tablet)).await.0, StatusCode::OK);
        check_error(
            node.get(WHOAMI, None).await,
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
        );

        let (status, _) = node
            .post("/_matrix/client/v3/logout/all", Some(&tablet), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        for token in [&tablet, &alice.token] {
            check_error(
                node.get(WHOAMI, Some(token)).await,
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
            );
        }
    }
}

#[tokio::test]
async fn repeated_wrong_logins_are_rate_limited() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        node.register("gina").await;
        let mut limited = None;
        for _ in 0..30 {
            let (status, body) = node.post(LOGIN, None, login_body("gina", "wrong")).await;
            if status == StatusCode::TOO_MANY_REQUESTS {
                limited = Some(body);
                break;
            }
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        }
        let body = limited.expect("rate limit reached within 30 attempts");
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
        assert!(
            body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
            "{body}"
        );
    }
}

/// Runs a request that needs the password through user-interactive auth: first without
/// auth (expecting the `401` flows), then with the password.
async fn with_password(
    node: &TestNode,
    method: reqwest::Method,
    path: &str,
    token: &str,
    user_id: &str,
    password: &str,
    mut body: Value,
) -> (StatusCode, Value) {
    let (status, uia) = node
        .request(method.clone(), path, Some(token), Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
    assert_eq!(uia["flows"], json!([{ "stages": ["m.login.password"] }]));
    body["auth"] = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user_id },
        "password": password,
        "session": uia["session"],
    });
    node.request(method, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn devices_list_rename_and_delete_with_password() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let mut second = login_body("alice", PASSWORD);
        second["device_id"] = json!("SECOND");
        second["initial_device_display_name"] = json!("tablet");
        let (status, second) = node.post(LOGIN, None, second).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        let second_token = second["access_token"].as_str().expect("token").to_owned();

        let (status, list) = node
            .get("/_matrix/client/v3/devices", Some(&alice.token))
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let mut ids: Vec<&str> = list["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .filter_map(|d| d["device_id"].as_str())
            .collect();
        ids.sort_unstable();
        let mut want = vec![alice.device_id.as_str(), "SECOND"];
        want.sort_unstable();
        assert_eq!(ids, want);

        let (status, one) = node
            .get("/_matrix/client/v3/devices/SECOND", Some(&alice.token))
            .await;
        assert_eq!(
            (status, one["display_name"].clone()),
            (StatusCode::OK, json!("tablet"))
        );
        let (status, _) = node
            .put(
                "/_matrix/client/v3/devices/SECOND",
                Some(&alice.token),
                json!({ "display_name": "old tablet" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, one) = node
            .get("/_matrix/client/v3/devices/SECOND", Some(&alice.token))
            .await;
        assert_eq!(one["display_name"], "old tablet");
        check_error(
            node.get("/_matrix/client/v3/devices/NOPE", Some(&alice.token))
                .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );
        check_error(
            node.put(
                "/_matrix/client/v3/devices/NOPE",
                Some(&alice.token),
                json!({}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        );

        // A wrong password keeps the device and says why.
        let (status, uia) = node
            .request(
                reqwest::Method::DELETE,
                "/_matrix/client/v3/devices/SECOND",
                Some(&alice.token),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uia}");
        let wrong = json!({ "auth": { "type": "m.login.password", "session": uia["session"],
            "identifier": { "type": "m.id.user", "user": "alice" }, "password": "nope" } });
        let (status, refused) = node
            .request(
                reqwest::Method::DELETE,
                "/_matrix/client/v3/devices/SECOND",
                Some(&alice.token),
                Some(wrong),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
        assert_eq!(refused["errcode"], "M_FORBIDDEN");
        assert_eq!(
            node.get(WHOAMI, Some(&second_token)).await.0,
            StatusCode::OK
        );

        let (status, body) = with_password(
            &node,
            reqwest::Method::DELETE,
            "/_matrix/client/v3/devices/SECOND",
            &alice.token,
            &alice.user_id,
            PASSWORD,
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        check_error(
            node.get(WHOAMI, Some(&second_token)).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );

        let (status, third) = node.post(LOGIN, None, login_body("alice", PASSWORD)).await;
        assert_eq!(status, StatusCode::OK);
        let third_device = third["device_id"].as_str().expect("device").to_owned();
        let (status, body) = with_password(
            &node,
            reqwest::Method::POST,
            "/_matrix/client/v3/delete_devices",
            &alice.token,
            &alice.user_id,
            PASSWORD,
            json!({ "devices": [third_device] }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, list) = node
            .get("/_matrix/client/v3/devices", Some(&alice.token))
            .await;
        assert_eq!(list["devices"].as_array().map(Vec::len), Some(1));
    }
}

#[tokio::test]
async fn password_change_and_deactivation() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let (_, other) = node.post(LOGIN, None, login_body("alice", PASSWORD)).await;
        let other = other["access_token"].as_str().expect("token").to_owned();

        let (status, body) = with_password(
            &node,
            reqwest::Method::POST,
            "/_matrix/client/v3/account/password",
            &alice.token,
            &alice.user_id,
            PASSWORD,
            json!({ "new_password": "battery staple", "logout_devices": true }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(node.get(WHOAMI, Some(&alice.token)).await.0, StatusCode::OK);
        check_error(
            node.get(WHOAMI, Some(&other)).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
        check_error(
            node.post(LOGIN, None, login_body("alice", PASSWORD)).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        );
        assert_eq!(
            node.post(LOGIN, None, login_body("alice", "battery staple"))
                .await
                .0,
            StatusCode::OK
        );
        let (status, threepids) = node
            .get("/_matrix/client/v3/account/3pid", Some(&alice.token))
            .await;
        assert_eq!(
            (status, threepids["threepids"].clone()),
            (StatusCode::OK, json!([]))
        );

        let (status, body) = with_password(
            &node,
            reqwest::Method::POST,
            "/_matrix/client/v3/account/deactivate",
            &alice.token,
            &alice.user_id,
            "battery staple",
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        check_error(
            node.get(WHOAMI, Some(&alice.token)).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
        check_error(
            node.post(LOGIN, None, login_body("alice", "battery staple"))
                .await,
            StatusCode::FORBIDDEN,
            "M_USER_DEACTIVATED",
        );
        check_error(
            node.get("/_matrix/client/v3/register/available?username=alice", None)
                .await,
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
        );
    }
}

#[tokio::test]
async fn discovery_endpoints() {
    for backend in BACKENDS {
        let node = TestNode::start(backend).await;
        let alice = node.register("alice").await;
        let (status, wk) = node.get("/.well-known/matrix/client", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(wk["m.homeserver"]["base_url"], node.url().as_str());
        let (status, versions) = node.get("/_matrix/client/versions", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            versions["versions"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("v1.12")))
        );
        assert_eq!(
            versions["unstable_features"]["org.matrix.e2e_cross_signing"],
            true
        );
        let (status, caps) = node
            .get("/_matrix/client/v3/capabilities", Some(&alice.token))
            .await;
        assert_eq!(status, StatusCode::OK, "{caps}");
        assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
        assert_eq!(
            caps["capabilities"]["m.room_versions"]["available"]["10"],
            "stable"
        );
        assert_eq!(caps["capabilities"]["m.change_password"]["enabled"], true);
        check_error(
            node.get("/_matrix/client/v3/capabilities", None).await,
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
        );
        let (status, turn) = node
            .get("/_matrix/client/v3/voip/turnServer", Some(&alice.token))
            .await;
        assert_eq!((status, turn), (StatusCode::OK, json!({})));
        let (status, protocols) = node
            .get(
                "/_matrix/client/v3/thirdparty/protocols",
                Some(&alice.token),
            )
            .await;
        assert_eq!((status, protocols), (StatusCode::OK, json!({})));
        for path in [
            "/_matrix/client/v1/auth_metadata",
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
        ] {
            check_error(
                node.get(path, None).await,
                StatusCode::NOT_FOUND,
                "M_UNRECOGNIZED",
            );
        }
    }
}
