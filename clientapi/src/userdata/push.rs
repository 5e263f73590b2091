//! Push rules and pushers.
//!
//! - `GET /_matrix/client/v3/pushrules/` (and `/pushrules/global/`)
//! - `GET|PUT|DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
//! - `GET|PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
//! - `GET|PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
//! - `GET /_matrix/client/v3/pushers`, `POST /_matrix/client/v3/pushers/set`

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use ruma::{
    api::client::push::{
        delete_pushrule, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pushrule,
        set_pushrule_actions, set_pushrule_enabled,
    },
    push::{InsertPushRuleError, RemovePushRuleError},
};
use serde_json::{Value, json};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiResult, Ruma, RumaResponse},
};

/// The routes of this module.
pub(super) fn routes() -> Router<AppState> {
    let rule = "/_matrix/client/v3/pushrules/global/{kind}/{rule_id}";
    Router::new()
        .route("/_matrix/client/v3/pushrules/", get(get_all))
        .route("/_matrix/client/v3/pushrules", get(get_all))
        .route("/_matrix/client/v3/pushrules/global/", get(get_global))
        .route(rule, get(get_rule).put(set_rule).delete(delete_rule))
        .route(
            &format!("{rule}/enabled"),
            get(get_enabled).put(set_enabled),
        )
        .route(
            &format!("{rule}/actions"),
            get(get_actions).put(set_actions),
        )
        .route("/_matrix/client/v3/pushers", get(get_pushers))
        .route("/_matrix/client/v3/pushers/set", post(set_pusher))
}

fn rule_not_found() -> ApiError {
    ApiError::not_found("Push rule not found")
}

async fn get_all(
    State(state): State<AppState>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> ApiResult<get_pushrules_all::v3::Response> {
    let session = req.session()?;
    let rules = state.hs.userdata.push_rules(&session.user_id).await?;
    Ok(RumaResponse(get_pushrules_all::v3::Response::new(rules)))
}

async fn get_global(
    State(state): State<AppState>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> ApiResult<get_pushrules_global_scope::v3::Response> {
    let session = req.session()?;
    let rules = state.hs.userdata.push_rules(&session.user_id).await?;
    Ok(RumaResponse(get_pushrules_global_scope::v3::Response::new(
        rules,
    )))
}

async fn get_rule(
    State(state): State<AppState>,
    req: Ruma<get_pushrule::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let rules = state.hs.userdata.push_rules(&session.user_id).await?;
    // The rule is answered in its wire form, as it appears inside the serialised rule set.
    let all = serde_json::to_value(&rules).map_err(ApiError::internal)?;
    all.get(req.body.kind.as_str())
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|r| r.get("rule_id").and_then(Value::as_str) == Some(&req.body.rule_id))
        })
        .cloned()
        .map(Json)
        .ok_or_else(rule_not_found)
}

async fn set_rule(
    State(state): State<AppState>,
    req: Ruma<set_pushrule::v3::Request>,
) -> ApiResult<set_pushrule::v3::Response> {
    let session = req.session()?.clone();
    let userdata = &state.hs.userdata;
    let mut rules = userdata.push_rules(&session.user_id).await?;
    rules
        .insert(
            req.body.rule,
            req.body.after.as_deref(),
            req.body.before.as_deref(),
        )
        .map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => rule_not_found(),
            other => ApiError::invalid_param(other.to_string()),
        })?;
    userdata.set_push_rules(&session.user_id, &rules).await?;
    Ok(RumaResponse(set_pushrule::v3::Response::new()))
}

async fn delete_rule(
    State(state): State<AppState>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> ApiResult<delete_pushrule::v3::Response> {
    let session = req.session()?;
    let userdata = &state.hs.userdata;
    let mut rules = userdata.push_rules(&session.user_id).await?;
    rules
        .remove(req.body.kind.clone(), &req.body.rule_id)
        .map_err(|e| match e {
            RemovePushRuleError::NotFound => rule_not_found(),
            other => ApiError::invalid_param(other.to_string()),
        })?;
    userdata.set_push_rules(&session.user_id, &rules).await?;
    Ok(RumaResponse(delete_pushrule::v3::Response::new()))
}

async fn get_enabled(
    State(state): State<AppState>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> ApiResult<get_pushrule_enabled::v3::Response> {
    let session = req.session()?;
    let rules = state.hs.userdata.push_rules(&session.user_id).await?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(rule_not_found)?;
    Ok(RumaResponse(get_pushrule_enabled::v3::Response::new(
        rule.enabled(),
    )))
}

async fn set_enabled(
    State(state): State<AppState>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> ApiResult<set_pushrule_enabled::v3::Response> {
    let session = req.session()?;
    let userdata = &state.hs.userdata;
    let mut rules = userdata.push_rules(&session.user_id).await?;
    rules
        .set_enabled(req.body.kind.clone(), &req.body.rule_id, req.body.enabled)
        .map_err(|_| rule_not_found())?;
    userdata.set_push_rules(&session.user_id, &rules).await?;
    Ok(RumaResponse(set_pushrule_enabled::v3::Response::new()))
}

async fn get_actions(
    State(state): State<AppState>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> ApiResult<get_pushrule_actions::v3::Response> {
    let session = req.session()?;
    let rules = state.hs.userdata.push_rules(&session.user_id).await?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(rule_not_found)?;
    Ok(RumaResponse(get_pushrule_actions::v3::Response::new(
        rule.actions().to_vec(),
    )))
}

async fn set_actions(
    State(state): State<AppState>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> ApiResult<set_pushrule_actions::v3::Response> {
    let session = req.session()?;
    let userdata = &state.hs.userdata;
    let mut rules = userdata.push_rules(&session.user_id).await?;
    rules
        .set_actions(
            req.body.kind.clone(),
            &req.body.rule_id,
            req.body.actions.clone(),
        )
        .map_err(|_| rule_not_found())?;
    userdata.set_push_rules(&session.user_id, &rules).await?;
    Ok(RumaResponse(set_pushrule_actions::v3::Response::new()))
}

async fn get_pushers(
    State(state): State<AppState>,
    req: Ruma<get_pushers::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.session()?;
    let pushers = state.hs.userdata.pushers(&session.user_id).await?;
    Ok(Json(json!({ "pushers": pushers })))
}

async fn set_pusher(
    State(state): State<AppState>,
    req: Ruma<set_pusher::v3::Request>,
) -> ApiResult<set_pusher::v3::Response> {
    let session = req.session()?;
    let userdata = &state.hs.userdata;
    match &req.body.action {
        set_pusher::v3::PusherAction::Post(data) => {
            let ids = &data.pusher.ids;
            let value = serde_json::to_value(&data.pusher).map_err(ApiError::internal)?;
            userdata
                .set_pusher(&session.user_id, &ids.app_id, &ids.pushkey, Some(&value))
                .await?;
        }
        set_pusher::v3::PusherAction::Delete(ids) => {
            userdata
                .set_pusher(&session.user_id, &ids.app_id, &ids.pushkey, None)
                .await?;
        }
        _ => return Err(ApiError::bad_json("Unknown pusher action")),
    }
    Ok(RumaResponse(set_pusher::v3::Response::new()))
}
