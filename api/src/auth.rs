//! Bearer tokens on `/api/*`: an extractor that admits a request only if its token is live and
//! its role is one the endpoint serves. Handlers name the roles in their signature, so a route
//! cannot be served without deciding who may use it.

use std::marker::PhantomData;

use application::auth::Role;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use secrecy::SecretString;

use crate::error::ApiError;
use crate::state::AppState;

/// The roles an endpoint serves.
pub trait Roles: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Operators only.
#[derive(Debug)]
pub struct Operators;
impl Roles for Operators {
    const ROLES: &'static [Role] = &[Role::Operator];
}

/// A request whose bearer token has one of `R`'s roles.
#[derive(Debug)]
pub struct Authorized<R: Roles> {
    pub role: Role,
    _roles: PhantomData<R>,
}

/// The bearer token of a request, if it carries one (the rate limits key on it too).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<SecretString> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim().to_owned()))
}

impl<R: Roles> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthenticated)?;
        let role = state
            .tokens
            .authenticate(&token)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        if !R::ROLES.contains(&role) {
            let needs: Vec<&str> = R::ROLES.iter().map(|r| r.as_str()).collect();
            return Err(ApiError::Forbidden {
                role: role.to_string(),
                needs: needs.join(" or "),
            });
        }
        Ok(Self {
            role,
            _roles: PhantomData,
        })
    }
}
