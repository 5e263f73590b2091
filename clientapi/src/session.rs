//! Login, logout, registration and whoami.
//!
//! - `GET /_matrix/client/v3/login`, `POST /_matrix/client/v3/login`
//! - `POST /_matrix/client/v3/logout`, `POST /_matrix/client/v3/logout/all`
//! - `GET /_matrix/client/v3/account/whoami`
//! - `POST /_matrix/client/v3/register`, `GET /_matrix/client/v3/register/available`
//! - `GET /_matrix/client/v1/register/m.login.registration_token/validity`

use std::net::{IpAddr, SocketAddr};

use axum::{
    Router,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State},
    http::request::Parts,
    routing::{get, post},
};
use grove_server::accounts::{Attempt, NewAccount, NewDevice};
use ruma::api::client::{
    account::{check_registration_token_validity, get_username_availability, register, whoami},
    session::{get_login_types, login, logout, logout_all},
    uiaa::UserIdentifier,
};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse, read_body},
};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/login", get(get_login_types).post(login))
        .route("/_matrix/client/v3/logout", post(logout))
        .route("/_matrix/client/v3/logout/all", post(logout_all))
        .route("/_matrix/client/v3/account/whoami", get(whoami))
        .route("/_matrix/client/v3/register", post(register))
        .route(
            "/_matrix/client/v3/register/available",
            get(get_username_availability),
        )
        .route(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            get(check_registration_token_validity),
        )
}

/// The client's address as the rate limits key it: the peer address when the server was
/// started with connection info, else `None` (an embedded node is reached over loopback
/// only, where the address says nothing anyway).
pub(crate) struct ClientIp(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(ClientIp(ip))
    }
}

/// The registration bucket shared by clients whose address is unknown.
const UNKNOWN_IP: &str = "unknown";

fn limit(state: &AppState, kind: Attempt, key: &str) -> Result<(), ApiError> {
    state
        .hs
        .accounts
        .rate_limit(kind, key)
        .map_err(|r| ApiError::limit_exceeded(r.retry_after_ms()))
}

async fn get_login_types(
    _req: Ruma<get_login_types::v3::Request>,
) -> ApiResult<get_login_types::v3::Response> {
    Ok(RumaResponse(get_login_types::v3::Response::new(vec![
        get_login_types::v3::LoginType::Password(Default::default()),
    ])))
}

/// `POST /login`'s request, checked for what ruma's parser assumes: a body that is a JSON
/// object names its login `type` as a string (the parser indexes `type` unchecked and panics
/// when it is missing).
struct LoginRequest(Ruma<login::v3::Request>);

impl FromRequest<AppState> for LoginRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(body, state.limits.max_body_bytes).await?;
        let missing_type = if bytes.iter().all(u8::is_ascii_whitespace) {
            true
        } else {
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(map)) => {
                    !map.get("type").is_some_and(|t| t.is_string())
                }
                // Not an object, or not JSON: the ruma extractor answers it.
                _ => false,
            }
        };
        if missing_type {
            return Err(ApiError::bad_json("missing field `type`"));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        Ok(Self(Ruma::from_request(req, state).await?))
    }
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    LoginRequest(req): LoginRequest,
) -> ApiResult<login::v3::Response> {
    let login::v3::LoginInfo::Password(password) = &req.body.login_info else {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Only m.login.password is supported",
        ));
    };
    #[allow(deprecated)] // `user` is the pre-r0.4 form, still sent by some clients.
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(m)), _) => m.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Only m.id.user identifiers are supported",
            ));
        }
        (None, None) => return Err(ApiError::missing_param("Missing identifier")),
    };
    // Failed logins count against the account, which slows guessing one account from many
    // addresses, and against the client's address unless that is loopback: every client of
    // an embedded node comes from 127.0.0.1, and one user's typos must not lock out the rest.
    let user_key = state
        .hs
        .accounts
        .resolve_user(&user)
        .map_or_else(|_| user.clone(), |u| u.to_string());
    let ip_key = ip
        .as_deref()
        .filter(|ip| !ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()));
    let mut keys = vec![user_key.as_str()];
    keys.extend(ip_key);
    state
        .hs
        .accounts
        .login_allowed(&keys)
        .map_err(|r| ApiError::limit_exceeded(r.retry_after_ms()))?;
    let device = NewDevice {
        device_id: req.body.device_id.clone(),
        display_name: req.body.initial_device_display_name.clone(),
        ip: ip.clone(),
    };
    let accounts = &state.hs.accounts;
    let done = match accounts
        .login_password(&user, &password.password, device)
        .await
    {
        Ok(done) => done,
        Err(grove_server::Error::InvalidCredentials) => {
            accounts.login_failed(&keys);
            // A deactivated account has no password left; say so rather than "wrong password".
            let deactivated = match accounts.resolve_user(&user) {
                Ok(id) => accounts.is_deactivated(&id).await?,
                Err(_) => false,
            };
            return Err(if deactivated {
                ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "M_USER_DEACTIVATED",
                    "This account has been deactivated",
                )
            } else {
                grove_server::Error::InvalidCredentials.into()
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(RumaResponse(login::v3::Response::new(
        done.user_id,
        done.access_token,
        done.device_id,
    )))
}

async fn logout(
    State(state): State<AppState>,
    req: Ruma<logout::v3::Request>,
) -> ApiResult<logout::v3::Response> {
    state.hs.accounts.logout(req.session()?).await?;
    Ok(RumaResponse(logout::v3::Response::new()))
}

async fn logout_all(
    State(state): State<AppState>,
    req: Ruma<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    state
        .hs
        .accounts
        .logout_all(&req.session()?.user_id)
        .await?;
    Ok(RumaResponse(logout_all::v3::Response::new()))
}

async fn whoami(req: Ruma<whoami::v3::Request>) -> ApiResult<whoami::v3::Response> {
    let session = req.session()?;
    let mut resp = whoami::v3::Response::new(session.user_id.clone(), false);
    resp.device_id = Some(session.device_id.clone());
    Ok(RumaResponse(resp))
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    req: Ruma<register::v3::Request>,
) -> ApiResult<register::v3::Response> {
    limit(
        &state,
        Attempt::Register,
        ip.as_deref().unwrap_or(UNKNOWN_IP),
    )?;
    let body = req.body;
    if body.kind == register::RegistrationKind::Guest {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "M_GUEST_ACCESS_FORBIDDEN",
            "Guest access is not enabled",
        ));
    }
    let account = NewAccount {
        username: body.username,
        password: body.password,
        device: NewDevice {
            device_id: body.device_id,
            display_name: body.initial_device_display_name,
            ip,
        },
        inhibit_login: body.inhibit_login,
    };
    let done = state
        .hs
        .accounts
        .register(account, body.auth.as_ref())
        .await?;
    let mut resp = register::v3::Response::new(done.user_id);
    if let Some(login) = done.login {
        resp.access_token = Some(login.access_token);
        resp.device_id = Some(login.device_id);
    }
    Ok(RumaResponse(resp))
}

async fn get_username_availability(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    req: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    limit(
        &state,
        Attempt::Register,
        ip.as_deref().unwrap_or(UNKNOWN_IP),
    )?;
    state
        .hs
        .accounts
        .username_available(&req.body.username)
        .await?;
    Ok(RumaResponse(get_username_availability::v3::Response::new(
        true,
    )))
}

async fn check_registration_token_validity(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<check_registration_token_validity::v1::Response> {
    limit(
        &state,
        Attempt::Register,
        ip.as_deref().unwrap_or(UNKNOWN_IP),
    )?;
    if state.hs.config.registration == grove_server::config::Registration::Closed {
        return Err(ApiError::forbidden("Registration is disabled"));
    }
    let valid = state.hs.accounts.registration_token_valid(&req.body.token);
    Ok(RumaResponse(
        check_registration_token_validity::v1::Response::new(valid),
    ))
}
