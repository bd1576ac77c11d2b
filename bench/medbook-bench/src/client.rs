//! A thin HTTP client for medbook's API, for set-up and the invariant check (the timed
//! requests go through `conn.rs`).

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The password of every user the bench creates.
pub const PASSWORD: &str = "bench-password";

/// The API at one base URL.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// A user the bench acts as.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub token: String,
    /// `Bearer {token}`, for the timed requests (`conn.rs`).
    pub authorization: HeaderValue,
}

impl User {
    fn new(id: i64, token: &str) -> User {
        User {
            id,
            token: token.to_owned(),
            authorization: crate::conn::bearer(token),
        }
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(512)
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("HTTP client"),
        }
    }

    /// Sends a request; returns the status and the error code (if any) and the body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let response = req.send().await?;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
        want: StatusCode,
    ) -> Value {
        let (status, answer) = self
            .call(method, path, token, Some(&body))
            .await
            .expect("request");
        assert_eq!(status, want, "{path}: {answer}");
        answer
    }

    pub async fn login(&self, email: &str, password: &str) -> User {
        let answer = self
            .expect(
                Method::POST,
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": password}),
                StatusCode::OK,
            )
            .await;
        User::new(
            answer["user"]["id"].as_i64().unwrap(),
            answer["token"].as_str().unwrap(),
        )
    }

    pub async fn register(&self, email: &str) -> User {
        let answer = self
            .expect(
                Method::POST,
                "/api/v1/auth/register",
                None,
                json!({"name": "Bench patient", "email": email, "password": PASSWORD}),
                StatusCode::CREATED,
            )
            .await;
        User::new(
            answer["user"]["id"].as_i64().unwrap(),
            answer["token"].as_str().unwrap(),
        )
    }

    pub async fn create_doctor(&self, admin: &User, email: &str) -> i64 {
        self.expect(
            Method::POST,
            "/api/v1/admin/users",
            Some(&admin.token),
            json!({"name": "Bench doctor", "email": email, "password": PASSWORD, "role": "doctor"}),
            StatusCode::CREATED,
        )
        .await["id"]
            .as_i64()
            .unwrap()
    }

    /// Every appointment, through the admin's paginated list.
    pub async fn all_appointments(&self, admin: &User) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/appointments?limit=100&cursor={c}"),
                None => "/api/v1/appointments?limit=100".to_owned(),
            };
            let (status, page) = self
                .call(Method::GET, &path, Some(&admin.token), None)
                .await
                .expect("list");
            assert_eq!(status, StatusCode::OK, "{page}");
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }
}
