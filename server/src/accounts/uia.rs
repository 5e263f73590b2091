//! User-interactive authentication: sessions kept in the database with an expiry, stages
//! completed one request at a time, and the `401` body that tells the client what is left.

use ruma::{
    UserId,
    api::client::uiaa::{AuthData, AuthType, UserIdentifier},
};
use serde_json::{Value, json};

use super::{Accounts, ids};
use crate::{Error, Result};

/// How long a client has to finish user-interactive auth once started.
const SESSION_LIFETIME_MS: i64 = 15 * 60 * 1000;

/// The ways through user-interactive auth an endpoint accepts: each flow is a list of stages.
#[derive(Debug, Clone)]
pub struct UiaFlows(pub Vec<Vec<AuthType>>);

impl UiaFlows {
    /// One flow of one stage.
    pub fn single(stage: AuthType) -> Self {
        Self(vec![vec![stage]])
    }

    fn allows(&self, stage: &AuthType) -> bool {
        self.0.iter().any(|flow| flow.contains(stage))
    }

    fn satisfied_by(&self, completed: &[String]) -> bool {
        self.0.iter().any(|flow| {
            flow.iter()
                .all(|stage| completed.iter().any(|c| c == stage.as_str()))
        })
    }
}

/// Why a stage was refused, shown with the `401` body.
struct StageError {
    errcode: &'static str,
    message: String,
}

impl Accounts {
    /// Runs one step of user-interactive auth for `user` (or for a registration, without one).
    ///
    /// Returns `Ok(())` when `auth` completes one of `flows`; otherwise
    /// [`Error::UiaRequired`] carrying the body to answer with `401`.
    pub async fn check_uia(
        &self,
        user: Option<&UserId>,
        flows: &UiaFlows,
        auth: Option<&AuthData>,
    ) -> Result<()> {
        let now = ids::now_ms();
        let Some(auth) = auth else {
            let session = self.new_uia_session(user, now).await?;
            return Err(uia_body(flows, &session, &[], None));
        };
        let (session, mut completed) = match auth.session() {
            Some(id) => match self.load_uia_session(id, user, now).await? {
                Some(completed) => (id.to_owned(), completed),
                None => {
                    let session = self.new_uia_session(user, now).await?;
                    let error = StageError {
                        errcode: "M_UNKNOWN",
                        message: "Unknown or expired authentication session".into(),
                    };
                    return Err(uia_body(flows, &session, &[], Some(error)));
                }
            },
            None => (self.new_uia_session(user, now).await?, Vec::new()),
        };
        match self.run_stage(user, flows, auth).await? {
            Ok(Some(stage)) => {
                if !completed.iter().any(|c| c == stage.as_str()) {
                    completed.push(stage.as_str().to_owned());
                }
            }
            Ok(None) => {}
            Err(error) => return Err(uia_body(flows, &session, &completed, Some(error))),
        }
        if flows.satisfied_by(&completed) {
            sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1")
                .bind(&session)
                .execute(self.storage.pool())
                .await?;
            return Ok(());
        }
        sqlx::query("UPDATE uia_sessions SET completed = $1 WHERE session_id = $2")
            .bind(serde_json::to_string(&completed)?)
            .bind(&session)
            .execute(self.storage.pool())
            .await?;
        Err(uia_body(flows, &session, &completed, None))
    }

    /// Checks one stage; `Ok(None)` means the request completed nothing (a fallback
    /// acknowledgement).
    async fn run_stage(
        &self,
        user: Option<&UserId>,
        flows: &UiaFlows,
        auth: &AuthData,
    ) -> Result<std::result::Result<Option<AuthType>, StageError>> {
        let Some(stage) = auth.auth_type() else {
            return Ok(Ok(None));
        };
        if !flows.allows(&stage) {
            return Ok(Err(StageError {
                errcode: "M_UNRECOGNIZED",
                message: format!("Stage {} is not offered here", stage.as_str()),
            }));
        }
        let passed = match auth {
            AuthData::Dummy(_) => true,
            AuthData::RegistrationToken(t) => self.registration_token_valid(&t.token),
            AuthData::Password(p) => {
                let Some(user) = user else {
                    return Ok(Err(StageError {
                        errcode: "M_FORBIDDEN",
                        message: "No account to check a password against".into(),
                    }));
                };
                let claimed = match &p.identifier {
                    UserIdentifier::Matrix(m) => self.resolve_user(&m.user).ok(),
                    _ => None,
                };
                claimed.as_deref() == Some(user) && self.check_password(user, &p.password).await?
            }
            _ => false,
        };
        if passed {
            Ok(Ok(Some(stage)))
        } else {
            let message = match stage {
                AuthType::Password => "Invalid password",
                AuthType::RegistrationToken => "Invalid registration token",
                _ => "Authentication stage failed",
            };
            Ok(Err(StageError {
                errcode: "M_FORBIDDEN",
                message: message.into(),
            }))
        }
    }

    async fn new_uia_session(&self, user: Option<&UserId>, now: i64) -> Result<String> {
        // Forget abandoned sessions whenever a new one starts, so the table stays small.
        sqlx::query("DELETE FROM uia_sessions WHERE expires_ts < $1")
            .bind(now)
            .execute(self.storage.pool())
            .await?;
        let session = ids::random_string(24);
        sqlx::query(
            "INSERT INTO uia_sessions (session_id, user_id, completed, expires_ts) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&session)
        .bind(user.map(|u| u.as_str().to_owned()))
        .bind("[]")
        .bind(now + SESSION_LIFETIME_MS)
        .execute(self.storage.pool())
        .await?;
        Ok(session)
    }

    /// The stages completed in a live session started by `user`, or `None` when the session
    /// is unknown, expired or someone else's.
    async fn load_uia_session(
        &self,
        id: &str,
        user: Option<&UserId>,
        now: i64,
    ) -> Result<Option<Vec<String>>> {
        let row: Option<(Option<String>, String, i64)> = sqlx::query_as(
            "SELECT user_id, completed, expires_ts FROM uia_sessions WHERE session_id = $1",
        )
        .bind(id)
        .fetch_optional(self.storage.pool())
        .await?;
        let Some((owner, completed, expires)) = row else {
            return Ok(None);
        };
        if expires < now || owner.as_deref() != user.map(UserId::as_str) {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&completed)?))
    }
}

fn uia_body(
    flows: &UiaFlows,
    session: &str,
    completed: &[String],
    error: Option<StageError>,
) -> Error {
    let flows: Vec<Value> = flows
        .0
        .iter()
        .map(|flow| json!({ "stages": flow.iter().map(AuthType::as_str).collect::<Vec<_>>() }))
        .collect();
    let mut body = json!({
        "flows": flows,
        "params": {},
        "session": session,
        "completed": completed,
    });
    if let (Some(error), Value::Object(map)) = (error, &mut body) {
        map.insert("errcode".into(), error.errcode.into());
        map.insert("error".into(), error.message.into());
    }
    Error::UiaRequired(body)
}
