//! Passwords (argon2id), bearer tokens (random, stored as SHA-256) and the [`Caller`]
//! extractor that turns a token into the authenticated user.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::run_blocking;
use crate::domain::Role;
use crate::error::AppError;
use crate::models::token;
use crate::server::AppState;

/// Hashes a password with argon2id and a random salt. Slow on purpose: never call it while
/// holding a transaction.
pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AppError::internal(format!("password hashing failed: {e}")))
}

/// Checks a password against a stored hash.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new random token (256 bits, URL-safe base64) and the hash that is stored for it.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated, active user making the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: i32,
    pub role: Role,
    /// The hash of the token used, so logout can revoke exactly this one.
    pub token_hash: String,
}

impl Caller {
    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(AppError::forbidden("Only an admin may do this"))
        }
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 512)
        .then(|| token.to_owned())
}

impl FromRequest for Caller {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token.ok_or(AppError::Unauthenticated)?;
            let state = state.ok_or_else(|| AppError::internal("app state missing"))?;
            let token_hash = hash_token(&token);
            let lookup = token_hash.clone();
            let user =
                run_blocking(&state.pool, move |conn| Ok(token::user_for(conn, &lookup)?)).await?;
            match user {
                Some(user) if user.is_active => Ok(Caller {
                    id: user.id,
                    role: user.role(),
                    token_hash,
                }),
                _ => Err(AppError::Unauthenticated),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.len() >= 43);
        assert_eq!(hash_token(&a), hash_a);
        assert_ne!(hash_a, a);
    }
}
