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
