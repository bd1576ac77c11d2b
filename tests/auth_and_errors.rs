//! Authentication, admin user management, and the error contract for every class of bad
//! input, on both backends.

mod common;

use common::{slot, Backend, TestApp, PASSWORD};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::json;

both_backends!(
    register_login_me_logout,
    emails_are_unique_case_insensitively_even_under_races,
    emails_keyed_by_an_earlier_version_are_rekeyed_at_start,
    passwords_are_one_password_however_unicode_spells_them,
    admin_manages_users_with_versions,
    bad_input_gets_clear_json_errors,
    nul_characters_in_text_are_422_everywhere,
    tokens_that_do_not_authenticate_get_401,
    deactivation_ends_sessions_for_good,
    head_is_get_without_the_body,
    a_method_a_path_does_not_have_is_405_with_allow,
    no_cache_keeps_an_answer,
    query_parameters_a_route_does_not_take_are_400,
    a_read_whose_etag_the_client_has_is_304,
    headers_a_request_may_carry_once_are_refused_twice,
);

both_backends_configured!(
    browser_apps_on_allowed_origins_may_call_the_api,
    tokens_expire_after_the_configured_lifetime,
);

/// `POST /auth/register` with the tests' password.
async fn register(app: &TestApp, name: &str, email: &str) -> common::Answer {
    let body = json!({"name": name, "email": email, "password": PASSWORD});
    app.call(Method::POST, "/api/v1/auth/register", None, Some(body))
        .await
}

/// A `POST /auth/login`, whatever it answers.
async fn attempt_login(app: &TestApp, email: &str, password: &str) -> common::Answer {
    let body = json!({"email": email, "password": password});
    app.call(Method::POST, "/api/v1/auth/login", None, Some(body))
        .await
}

async fn register_login_me_logout(app: TestApp) {
    let register = register(&app, "Ada", "Ada@Example.com").await;
    assert_eq!(register.status, StatusCode::CREATED, "{:?}", register.body);
    let user = &register.body["user"];
    assert_eq!(user["role"], "patient");
    assert_eq!(user["version"], 1);
    assert_eq!(user["is_active"], true);
    assert!(user.get("password_hash").is_none() && user.get("specialty").is_none());
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(register.body["token"].as_str().unwrap().len() >= 43);

    // Stored as a hash only.
    let token = register.body["token"].as_str().unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM api_tokens WHERE token_hash = '{token}'"
        )),
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE password_hash LIKE '$argon2id$%'"),
        2
    );

    let ada = app.login("ada@example.COM", PASSWORD).await;
    let me = app.get("/api/v1/me", &ada).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email"], "Ada@Example.com");
    assert_eq!(me.header("etag"), "\"1\"");

    let wrong_password = attempt_login(&app, "ada@example.com", "not-her-password").await;
    let unknown_email = attempt_login(&app, "nobody@example.com", PASSWORD).await;
    assert_eq!(wrong_password.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password.body, unknown_email.body);

    let logout = app
        .call(Method::POST, "/api/v1/auth/logout", Some(&ada.token), None)
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/me", &ada).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn emails_are_unique_case_insensitively_even_under_races(app: TestApp) {
    let attempts = futures_util::future::join_all((0..8).map(|i| {
        let email = if i % 2 == 0 {
            "twin@example.com"
        } else {
            "TWIN@example.com"
        };
        register(&app, "Twin", email)
    }))
    .await;
    common::assert_one_winner(&attempts, "EMAIL_TAKEN");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE lower(email) = 'twin@example.com'"),
        1
    );

    // Case beyond ASCII: SQLite's lower() folds ASCII only, and with the index on it both of
    // these registered there.
    let id = one_address(
        &app,
        "Ärztin@Example.com",
        &["ärztin@example.com", "ÄRZTIN@example.COM"],
    )
    .await;
    let by_admin = app
        .post(
            "/api/v1/admin/users",
            &app.admin,
            json!({"name": "X", "email": "ÄRZTIN@EXAMPLE.COM", "password": PASSWORD, "role": "doctor"}),
        )
        .await;
    assert_eq!(by_admin.code(), "EMAIL_TAKEN");
    let login = app.login("ärztin@example.com", PASSWORD).await;
    let me = app.get("/api/v1/me", &login).await;
    assert_eq!(me.body["id"], id);
    assert_eq!(me.body["email"], "Ärztin@Example.com", "stored as given");

    // Unicode spells "ë" as one character or as "e" and a combining diaeresis (as some input
    // methods send it): one address, which was two accounts.
    one_address(
        &app,
        "zo\u{eb}@example.com",
        &["ZOE\u{308}@example.com", "zoe\u{308}@example.com"],
    )
    .await;
}

/// Registers `email` and checks that each of `same` is its address too: registering it is
/// 409 `EMAIL_TAKEN`, and a login with it is the user's. Returns the user's id.
async fn one_address(app: &TestApp, email: &str, same: &[&str]) -> i64 {
    let first = register(app, "Same", email).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let id = first.body["user"]["id"].as_i64().unwrap();
    for other in same {
        let again = register(app, "Same", other).await;
        assert_eq!(
            (again.status, again.code()),
            (StatusCode::CONFLICT, "EMAIL_TAKEN"),
            "{other:?}"
        );
        assert_eq!(app.login(other, PASSWORD).await.id, id, "{other:?}");
    }
    id
}

/// A password is one password however Unicode spells it: it is hashed and checked in NFKC,
/// as NIST SP 800-63B asks (an "é" as one character or as "e" and a combining accent, a
/// full-width digit), and the rule's eight characters are counted in that form.
async fn passwords_are_one_password_however_unicode_spells_them(app: TestApp) {
    let register = |password: &str| {
        let body = json!({"name": "Chloé", "email": "c@x.io", "password": password});
        app.call(Method::POST, "/api/v1/auth/register", None, Some(body))
    };
    let short = register("cafe\u{301}xyz").await;
    assert_eq!(short.detail("password"), "must be at least 8 characters");
    let chloe = register("caf\u{e9} 2024!").await;
    assert_eq!(chloe.status, StatusCode::CREATED, "{:?}", chloe.body);
    let id = chloe.body["user"]["id"].as_i64().unwrap();
    for password in [
        "cafe\u{301} 2024!",
        "caf\u{e9} \u{ff12}\u{ff10}\u{ff12}\u{ff14}!",
    ] {
        assert_eq!(app.login("c@x.io", password).await.id, id, "{password:?}");
    }
    assert_eq!(
        attempt_login(&app, "c@x.io", "cafe 2024!").await.status,
        StatusCode::UNAUTHORIZED
    );

    // A hash stored before passwords were normalized holds the password as it was sent: that
    // spelling logs in, and its login stores a hash of the normal form in its place, after
    // which every spelling does.
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let as_sent = "cafe\u{301} 2024!";
    let before = argon2::Argon2::default()
        .hash_password(as_sent.as_bytes(), &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
    app.sql(&format!(
        "UPDATE users SET password_hash = '{before}' WHERE id = {id}"
    ));
    let composed = "caf\u{e9} 2024!";
    assert_eq!(
        attempt_login(&app, "c@x.io", composed).await.status,
        StatusCode::UNAUTHORIZED,
        "the hash from before matches the spelling it was made of only"
    );
    assert_eq!(app.login("c@x.io", as_sent).await.id, id);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM users WHERE password_hash = '{before}'"
        )),
        0,
        "replaced"
    );
    assert_eq!(app.login("c@x.io", composed).await.id, id);
    assert_eq!(app.login("c@x.io", as_sent).await.id, id);
}

/// Keys an earlier version stored are brought to today's form (lower case in Unicode's
/// normal form) when medbook starts after the migration that lists them: a key without NFC,
/// and one from SQL's ASCII-only `lower()` (SQLite's, given by the migration that made the
/// key), each left a user whom a login with the email as registered did not find. Two
/// accounts for one address cannot both have it: the second keeps its key, and stays listed
/// until an operator changes its email.
async fn emails_keyed_by_an_earlier_version_are_rekeyed_at_start(app: TestApp) {
    let id = |answer: common::Answer| answer.body["user"]["id"].as_i64().unwrap();
    let zoe = id(register(&app, "Zoë", "Zoe\u{308}@example.com").await);
    let arztin = id(register(&app, "Ärztin", "ÄRZTIN@example.com").await);
    let emile = id(register(&app, "Émile", "\u{c9}mile@example.com").await);
    let plain = id(register(&app, "Plain", "Plain@example.com").await);
    // As the version before left them, and a second Émile it let register.
    app.sql(&format!(
        "UPDATE users SET email_key = 'zoe\u{308}@example.com' WHERE id = {zoe}; \
         UPDATE users SET email_key = '\u{c4}rztin@example.com' WHERE id = {arztin}; \
         INSERT INTO users (name, email, email_key, password_hash, role, created_at, updated_at) \
         SELECT 'Émile', 'E\u{301}mile@example.com', 'e\u{301}mile@example.com', \
                password_hash, role, created_at, updated_at FROM users WHERE id = {emile}"
    ));
    let emile_again = app.count("SELECT MAX(id) FROM users");
    let migrations = match app.backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    app.sql(
        &std::fs::read_to_string(format!(
            "{migrations}/2026-12-08-000007_email_key_nfc/down.sql"
        ))
        .unwrap(),
    );
    app.sql("DELETE FROM __diesel_schema_migrations WHERE version = '20261208000007'");
    assert_eq!(
        attempt_login(&app, "zo\u{eb}@example.com", PASSWORD)
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "not found before"
    );

    // The migration lists the users with an email or key that is not ASCII; a start
    // (`server::prepare`, as `cargo run`'s) re-keys each.
    let pool = app.service_pool();
    let mut conn = pool.get().unwrap();
    medbook::db::run_migrations(&mut conn).unwrap();
    assert_eq!(
        app.count("SELECT COUNT(*) FROM email_keys_pending"),
        4,
        "Plain@example.com is not listed"
    );
    medbook::server::prepare(&medbook::config::Config::for_database(&app.db_url)).unwrap();
    assert_eq!(
        app.count("SELECT COUNT(*) FROM email_keys_pending"),
        1,
        "only the second Émile is left"
    );
    for (email, user) in [
        ("zo\u{eb}@example.com", zoe),
        ("ZOE\u{308}@EXAMPLE.COM", zoe),
        ("ärztin@example.com", arztin),
        ("ÄRZTIN@example.com", arztin),
        ("e\u{301}mile@example.com", emile),
        ("plain@example.com", plain),
    ] {
        assert_eq!(app.login(email, PASSWORD).await.id, user, "{email:?}");
    }

    // The clash stays listed, at every start, until one email changes by hand.
    let rekey = |conn: &mut medbook::db::DbConn| {
        medbook::services::users::rekey_pending_emails(conn).unwrap()
    };
    let as_i32 = |id: i64| i32::try_from(id).unwrap();
    let done = rekey(&mut conn);
    assert!(done.rekeyed.is_empty(), "{done:?}");
    assert_eq!(done.clashes, [(as_i32(emile_again), as_i32(emile))]);
    app.sql(&format!(
        "UPDATE users SET email = 'Emile.Two@example.com' WHERE id = {emile_again}"
    ));
    let done = rekey(&mut conn);
    assert_eq!(
        (done.rekeyed, done.clashes),
        (vec![as_i32(emile_again)], vec![])
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM email_keys_pending"), 0);
    assert_eq!(
        app.login("emile.two@example.com", PASSWORD).await.id,
        emile_again
    );
}

async fn admin_manages_users_with_versions(app: TestApp) {
    let patient = app.patient().await;
    let create = |body| app.post("/api/v1/admin/users", &app.admin, body);
    let doctor = create(json!({"name": "Dr Who", "email": "who@example.com", "password": PASSWORD, "role": "doctor", "specialty": "time"})).await;
    assert_eq!(doctor.status, StatusCode::CREATED);
    assert_eq!(doctor.body["specialty"], "time");
    let bad_role = create(
        json!({"name": "X", "email": "x@example.com", "password": PASSWORD, "role": "wizard"}),
    )
    .await;
    assert!(bad_role.body["details"]["role"].is_string());
    let taken = create(
        json!({"name": "X", "email": "WHO@example.com", "password": PASSWORD, "role": "admin"}),
    )
    .await;
    assert_eq!(taken.code(), "EMAIL_TAKEN");
    let by_patient = app
        .post(
            "/api/v1/admin/users",
            &patient,
            json!({"name": "X", "email": "y@example.com", "password": PASSWORD, "role": "admin"}),
        )
        .await;
    assert_eq!(by_patient.status, StatusCode::FORBIDDEN);

    let id = doctor.id();
    let path = format!("/api/v1/admin/users/{id}");
    let patch = |body, if_match: Option<&str>| {
        let mut req = app
            .client
            .patch(format!("{}{path}", app.base))
            .bearer_auth(&app.admin.token)
            .json(&body);
        if let Some(tag) = if_match {
            req = req.header("If-Match", tag);
        }
        app.send(req)
    };
    let renamed = patch(json!({"name": "Dr Who II", "version": 1}), None).await;
    assert_eq!(
        (renamed.status, renamed.body["version"].as_i64()),
        (StatusCode::OK, Some(2))
    );
    let stale = patch(json!({"name": "Dr Stale", "version": 1}), None).await;
    assert_eq!(stale.code(), "VERSION_CONFLICT");
    assert_eq!(stale.body["current"]["name"], "Dr Who II");
    let stale_etag = patch(json!({"is_active": false}), Some("\"1\"")).await;
    assert_eq!(stale_etag.status, StatusCode::PRECONDITION_FAILED);
    let deactivated = patch(json!({"is_active": false}), Some("\"2\"")).await;
    assert_eq!(deactivated.status, StatusCode::OK);
    assert_eq!(deactivated.body["is_active"], false);
    assert_eq!(deactivated.header("etag"), "\"3\"");
    let nothing = patch(json!({}), None).await;
    assert_eq!(nothing.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = app
        .call(
            Method::PATCH,
            "/api/v1/admin/users/999999",
            Some(&app.admin.token),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // A deactivated user cannot log in.
    let login = attempt_login(&app, "who@example.com", PASSWORD).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    // A specialty is cleared with null, never blank; only a doctor has one.
    let blank = create(json!({"name": "Dr B", "email": "b@example.com", "password": PASSWORD, "role": "doctor", "specialty": " "})).await;
    assert!(
        blank.body["details"]["specialty"].is_string(),
        "{:?}",
        blank.body
    );
    let other = create(json!({"name": "Dr O", "email": "o@example.com", "password": PASSWORD, "role": "doctor", "specialty": "eyes"})).await;
    let other_path = format!("/api/v1/admin/users/{}", other.id());
    let specialty = |body| {
        app.call(
            Method::PATCH,
            &other_path,
            Some(&app.admin.token),
            Some(body),
        )
    };
    let blank = specialty(json!({"specialty": ""})).await;
    assert!(
        blank.body["details"]["specialty"].is_string(),
        "{:?}",
        blank.body
    );
    let cleared = specialty(json!({"specialty": null})).await;
    assert_eq!(cleared.status, StatusCode::OK, "{:?}", cleared.body);
    assert!(cleared.body["specialty"].is_null());
    assert_eq!(cleared.body["version"], 2);
    let listed = app
        .get(&format!("/api/v1/doctors/{}", other.id()), &patient)
        .await;
    assert!(listed.body["specialty"].is_null(), "{:?}", listed.body);
    let of_patient = app
        .call(
            Method::PATCH,
            &format!("/api/v1/admin/users/{}", patient.id),
            Some(&app.admin.token),
            Some(json!({"specialty": null})),
        )
        .await;
    assert!(
        of_patient.body["details"]["specialty"].is_string(),
        "{:?}",
        of_patient.body
    );
}

/// JSON can carry NUL (`\u0000`) and PostgreSQL's text cannot: every stored text refuses it
/// with a 422 naming the field (they were 500s on PostgreSQL), and a login with one is just an
/// unknown email.
async fn nul_characters_in_text_are_422_everywhere(app: TestApp) {
    let patient = app.patient().await;
    let doctor = app.doctor().await;
    let refused = |answer: common::Answer, field: &str| {
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            "{field}: {:?}",
            answer.body
        );
        assert!(
            answer.body["details"][field]
                .as_str()
                .is_some_and(|m| m.contains("NUL") || m.contains("email")),
            "{field}: {:?}",
            answer.body
        );
    };
    refused(
        register(&app, "A\0da", "nul-name@example.com").await,
        "name",
    );
    refused(register(&app, "Ada", "nul\0@example.com").await, "email");
    let login = attempt_login(&app, "nul\0@example.com", PASSWORD).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED, "{:?}", login.body);
    refused(
        app.post(
            "/api/v1/admin/users",
            &app.admin,
            json!({"name": "Dr", "email": "nul-dr@example.com", "password": PASSWORD, "role": "doctor", "specialty": "\0"}),
        )
        .await,
        "specialty",
    );
    refused(
        app.post(
            "/api/v1/appointments",
            &patient,
            json!({"doctor_id": doctor.id, "scheduled_at": slot(2, 9, 0), "type": "in_person", "reason": "\0"}),
        )
        .await,
        "reason",
    );
    let id = app.booked(&patient, &doctor, &slot(2, 10, 0)).await;
    refused(
        app.put(
            &format!("/api/v1/appointments/{id}"),
            &patient,
            json!({"reason": "a\0"}),
        )
        .await,
        "reason",
    );
    app.walk(id, &doctor, &["confirmed", "in_progress", "completed"])
        .await;
    refused(
        app.post(
            "/api/v1/prescriptions",
            &doctor,
            json!({"appointment_id": id, "medications": [{"name": "A\0", "dosage": "1", "frequency": "daily"}]}),
        )
        .await,
        "medications[0].name",
    );
    refused(
        app.post(
            "/api/v1/ratings",
            &patient,
            json!({"appointment_id": id, "score": 4, "comment": "\0"}),
        )
        .await,
        "comment",
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM prescriptions"), 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM ratings"), 0);
}

async fn bad_input_gets_clear_json_errors(app: TestApp) {
    let patient = app.patient().await;
    let url = format!("{}/api/v1/appointments", app.base);
    let raw = |body: &'static str, content_type: &'static str| {
        app.send(
            app.client
                .post(&url)
                .bearer_auth(&patient.token)
                .header(CONTENT_TYPE, content_type)
                .body(body),
        )
    };
    let malformed = raw("{\"doctor_id\": ", "application/json").await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (StatusCode::BAD_REQUEST, "BAD_REQUEST")
    );
    // Not JSON either: text after the value (it was taken as the value), and a body that
    // breaks off after an unknown field (it was a 422 about the field).
    for body in [
        "{\"doctor_id\": 1, \"scheduled_at\": \"2040-01-01T10:00:00Z\", \"type\": \"in_person\"} x",
        "{\"price\": ",
    ] {
        let answer = raw(body, "application/json").await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            "{body}"
        );
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 0);
    // A body is an object: serde's structs also took an array, field by field by position.
    let doctor = app.doctor().await;
    let positional = format!(r#"[{}, "2040-01-01T10:00:00Z", "in_person"]"#, doctor.id);
    let answer = app
        .send(
            app.client
                .post(&url)
                .bearer_auth(&patient.token)
                .header(CONTENT_TYPE, "application/json")
                .body(positional),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        answer.body
    );
    assert_eq!(
        answer.body["details"]["body"],
        "invalid type: sequence, expected a JSON object"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 0);
    // A compressed body is refused as such (it was "not valid JSON"); `identity` is no coding.
    let encoded = |encoding: &'static str, body: &'static [u8]| {
        app.send(
            app.client
                .post(&url)
                .bearer_auth(&patient.token)
                .header(CONTENT_TYPE, "application/json")
                .header("Content-Encoding", encoding)
                .body(body),
        )
    };
    let gzip = encoded("gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00").await;
    assert_eq!(
        (gzip.status, gzip.code()),
        (StatusCode::BAD_REQUEST, "BAD_REQUEST")
    );
    assert!(gzip.body["error"]
        .as_str()
        .unwrap()
        .contains("Content-Encoding gzip"));
    let identity = encoded("identity", b"[]").await;
    assert_eq!(identity.status, StatusCode::UNPROCESSABLE_ENTITY);
    let not_json = raw("doctor_id=1", "application/x-www-form-urlencoded").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let array = raw("[1, 2]", "application/json").await;
    assert_eq!(array.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mistyped = raw("{\"doctor_id\": \"one\", \"scheduled_at\": \"2040-01-01T10:00:00Z\", \"type\": \"in_person\"}", "application/json").await;
    assert_eq!(mistyped.code(), "VALIDATION_FAILED");
    assert!(mistyped.body["details"]["doctor_id"].is_string());
    let unknown_field = raw("{\"doctor_id\": 1, \"scheduled_at\": \"2040-01-01T10:00:00Z\", \"type\": \"in_person\", \"price\": 3}", "application/json").await;
    assert_eq!(unknown_field.status, StatusCode::UNPROCESSABLE_ENTITY);

    let huge = "x".repeat(70 * 1024);
    let too_big = app
        .send(
            app.client
                .post(&url)
                .bearer_auth(&patient.token)
                .json(&json!({"reason": huge})),
        )
        .await;
    assert_eq!(
        (too_big.status, too_big.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );

    let short = app
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"name": "", "email": "nope", "password": "short"})),
        )
        .await;
    assert_eq!(short.code(), "VALIDATION_FAILED");
    let details = short.body["details"].as_object().unwrap();
    assert!(
        details.contains_key("name")
            && details.contains_key("email")
            && details.contains_key("password")
    );

    let unknown_route = app.get("/api/v1/nothing-here", &patient).await;
    assert_eq!(
        (unknown_route.status, unknown_route.code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let zero_id = app.get("/api/v1/appointments/0", &patient).await;
    assert_eq!(zero_id.status, StatusCode::NOT_FOUND);
    let admin_only = app
        .call(
            Method::PATCH,
            "/api/v1/admin/users/1",
            Some(&patient.token),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(admin_only.status, StatusCode::FORBIDDEN);

    // No error body carries database detail.
    for answer in [
        &malformed,
        &not_json,
        &mistyped,
        &too_big,
        &short,
        &unknown_route,
    ] {
        let text = answer.body.to_string().to_lowercase();
        for leak in ["select", "sqlite", "postgres", "diesel", "constraint"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }
    assert_eq!(app.get("/healthz", &patient).await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz", &patient).await.status, StatusCode::OK);
}

/// A header that may be sent once, sent twice, is refused: the request was judged by the first
/// line alone (two tokens authenticated as the first; a second key, condition or content type
/// was ignored).
async fn headers_a_request_may_carry_once_are_refused_twice(app: TestApp) {
    let patient = app.patient().await;
    let doctor = app.doctor().await;
    let me = app
        .send(
            app.client
                .get(format!("{}/api/v1/me", app.base))
                .header("Authorization", format!("Bearer {}", patient.token))
                .header("Authorization", "Bearer someone-else"),
        )
        .await;
    assert_eq!(
        (me.status, me.code()),
        (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
    );
    assert_eq!(me.header("www-authenticate"), "Bearer");

    let booking =
        json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 9, 0), "type": "in_person"});
    let url = format!("{}/api/v1/appointments", app.base);
    let keys = app
        .send(
            app.client
                .post(&url)
                .bearer_auth(&patient.token)
                .header("Idempotency-Key", "one")
                .header("Idempotency-Key", "two")
                .json(&booking),
        )
        .await;
    assert_eq!(
        (keys.status, keys.code()),
        (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        "{:?}",
        keys.body
    );
    let types = app
        .send(
            app.client
                .post(&url)
                .bearer_auth(&patient.token)
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_TYPE, "text/plain")
                .body(booking.to_string()),
        )
        .await;
    assert_eq!(types.status, StatusCode::BAD_REQUEST, "{:?}", types.body);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 0);

    let id = app.booked(&patient, &doctor, &slot(3, 10, 0)).await;
    let conditions = app
        .send(
            app.client
                .put(format!("{url}/{id}"))
                .bearer_auth(&patient.token)
                .header("If-Match", "\"1\"")
                .header("If-Match", "\"7\"")
                .json(&json!({"reason": "twice"})),
        )
        .await;
    assert_eq!(
        (conditions.status, conditions.code()),
        (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        "{:?}",
        conditions.body
    );
    let now = app
        .get(&format!("/api/v1/appointments/{id}"), &patient)
        .await;
    assert_eq!(
        (now.body["version"].as_i64(), now.body["reason"].as_str()),
        (Some(1), None)
    );
}

async fn tokens_that_do_not_authenticate_get_401(app: TestApp) {
    let patient = app.patient().await;
    let doctor = app.doctor().await;
    let id = app.booked(&patient, &doctor, &common::slot(2, 9, 0)).await;
    // GET/PUT of one appointment check the token in the same query that reads the appointment:
    // an existing appointment must not turn a bad token into anything but 401.
    let requests = |auth: Option<&str>| {
        let appointment = format!("{}/api/v1/appointments/{id}", app.base);
        let missing = format!("{}/api/v1/appointments/999999", app.base);
        [
            app.client.get(format!("{}/api/v1/me", app.base)),
            app.client.get(&appointment),
            app.client.get(missing),
            app.client
                .put(&appointment)
                .json(&json!({"status": "cancelled"})),
            // A booking: a bad token books nothing.
            app.client
                .post(format!("{}/api/v1/appointments", app.base))
                .json(&json!({"doctor_id": doctor.id, "scheduled_at": common::slot(3, 9, 0), "type": "in_person"})),
            // Refused before the token is checked (body, query, path, If-Match): a bad token
            // still answers first, as a missing one does.
            app.client
                .post(format!("{}/api/v1/appointments", app.base))
                .header(CONTENT_TYPE, "application/json")
                .body("{\"doctor_id\": "),
            app.client
                .get(format!("{}/api/v1/appointments?color=blue", app.base)),
            app.client
                .get(format!("{}/api/v1/appointments/abc", app.base)),
            app.client
                .put(&appointment)
                .header("If-Match", "zz")
                .json(&json!({"reason": "x"})),
        ]
        .map(|req| match auth {
            Some(value) => req.header("Authorization", value),
            None => req,
        })
    };
    let cases = [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer not-a-real-token"),
    ];
    for header in cases {
        for req in requests(header) {
            let answer = app.send(req).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{header:?}");
            assert_eq!(answer.code(), "UNAUTHENTICATED");
            assert_eq!(answer.header("www-authenticate"), "Bearer");
        }
    }
    // With a good token the same requests get their own answers.
    let statuses: Vec<_> = futures_util::future::join_all(
        requests(Some(&format!("Bearer {}", patient.token)))
            .into_iter()
            .skip(5)
            .map(|req| app.send(req)),
    )
    .await
    .iter()
    .map(|answer| answer.status.as_u16())
    .collect();
    assert_eq!(statuses, [400, 400, 404, 400]);
    // A deactivated user's token stops working.
    assert_eq!(app.get("/api/v1/me", &doctor).await.status, StatusCode::OK);
    let deactivate = app.deactivate(doctor.id).await;
    assert_eq!(deactivate.status, StatusCode::OK);
    for req in requests(Some(&format!("Bearer {}", doctor.token))) {
        assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
    // Revoked by logout.
    assert_eq!(
        app.get(&format!("/api/v1/appointments/{id}"), &patient)
            .await
            .status,
        StatusCode::OK
    );
    app.call(
        Method::POST,
        "/api/v1/auth/logout",
        Some(&patient.token),
        None,
    )
    .await;
    for req in requests(Some(&format!("Bearer {}", patient.token))) {
        assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
    // Nothing was changed by the rejected PUTs.
    let admin_view = app
        .get(&format!("/api/v1/appointments/{id}"), &app.admin)
        .await;
    assert_eq!(
        (
            admin_view.body["status"].as_str(),
            admin_view.body["version"].as_i64()
        ),
        (Some("pending"), Some(1))
    );
    // ...and the rejected bookings booked nothing.
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 1);
}

/// The status `GET /me` answers with `token`.
async fn me_status(app: &TestApp, token: &str) -> StatusCode {
    app.call(Method::GET, "/api/v1/me", Some(token), None)
        .await
        .status
}

/// Deactivating a user ends every session they had: their tokens are refused, are gone from
/// the table, and stay refused after a reactivation, which asks for a new login (they came
/// back to life before). A login racing the deactivation either is refused or gets a token
/// that dies with it. Other changes to a user leave their sessions alone.
async fn deactivation_ends_sessions_for_good(app: TestApp) {
    let email = "sessions@example.com";
    let registered = register(&app, "S", email).await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{:?}",
        registered.body
    );
    let id = registered.body["user"]["id"].as_i64().unwrap();
    let first = registered.body["token"].as_str().unwrap().to_owned();
    let second = app.login(email, PASSWORD).await.token;
    let user_path = format!("/api/v1/admin/users/{id}");
    let admin_patch = |body| {
        app.call(
            Method::PATCH,
            &user_path,
            Some(&app.admin.token),
            Some(body),
        )
    };
    let tokens_held = || {
        app.count(&format!(
            "SELECT COUNT(*) FROM api_tokens WHERE user_id = {id}"
        ))
    };

    // A rename and a no-op activation leave the sessions alone.
    assert_eq!(
        admin_patch(json!({"name": "S2"})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        admin_patch(json!({"is_active": true})).await.status,
        StatusCode::OK
    );
    assert_eq!(me_status(&app, &first).await, StatusCode::OK);
    assert_eq!(me_status(&app, &second).await, StatusCode::OK);
    assert_eq!(tokens_held(), 2);

    assert_eq!(
        admin_patch(json!({"is_active": false})).await.status,
        StatusCode::OK
    );
    assert_eq!(me_status(&app, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(tokens_held(), 0);
    // A deactivation of an inactive user changes nothing more.
    assert_eq!(
        admin_patch(json!({"is_active": false})).await.status,
        StatusCode::OK
    );
    let reactivated = admin_patch(json!({"is_active": true})).await;
    assert_eq!(reactivated.body["is_active"], true);
    for token in [&first, &second] {
        assert_eq!(me_status(&app, token).await, StatusCode::UNAUTHORIZED);
    }
    let third = app.login(email, PASSWORD).await.token;
    assert_eq!(me_status(&app, &third).await, StatusCode::OK);

    // Logins racing deactivations: each login is refused or issues a token, and whichever way
    // the race went, the token does not work after the reactivation that follows. The
    // deactivation starts later each round, from at once (it lands during the login's
    // password check) to after the login is done.
    for round in 0..10 {
        let (login, deactivated) = tokio::join!(attempt_login(&app, email, PASSWORD), async {
            tokio::time::sleep(std::time::Duration::from_millis(round * 8)).await;
            admin_patch(json!({"is_active": false})).await
        });
        assert_eq!(deactivated.status, StatusCode::OK);
        assert_eq!(
            admin_patch(json!({"is_active": true})).await.status,
            StatusCode::OK
        );
        match login.status {
            StatusCode::OK => {
                let token = login.body["token"].as_str().unwrap();
                assert_eq!(
                    me_status(&app, token).await,
                    StatusCode::UNAUTHORIZED,
                    "round {round}"
                );
            }
            StatusCode::UNAUTHORIZED => assert_eq!(login.code(), "UNAUTHENTICATED"),
            other => panic!("login answered {other}: {:?}", login.body),
        }
    }
    assert_eq!(me_status(&app, &third).await, StatusCode::UNAUTHORIZED);
    let fresh = app.login(email, PASSWORD).await.token;
    assert_eq!(me_status(&app, &fresh).await, StatusCode::OK);
}

/// `HEAD` of a `GET` route answers what the `GET` would, status and headers, without the body
/// (a health check by `HEAD` was a 404); a path without a `GET` answers `HEAD` with 405.
async fn head_is_get_without_the_body(app: TestApp) {
    let patient = app.patient().await;
    let doctor = app.doctor().await;
    let other = app.patient().await;
    let id = app.booked(&patient, &doctor, &slot(2, 9, 0)).await;
    let head = |path: String, token: Option<&str>| {
        let mut req = app.client.head(format!("{}{path}", app.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        app.send(req)
    };
    let appointment = format!("/api/v1/appointments/{id}");
    let health = head("/healthz".to_owned(), None).await;
    assert_eq!(
        (health.status, &health.body),
        (StatusCode::OK, &serde_json::Value::Null)
    );
    let own = head(appointment.clone(), Some(&patient.token)).await;
    assert_eq!(
        (own.status, &own.body),
        (StatusCode::OK, &serde_json::Value::Null)
    );
    assert_eq!(own.header("etag"), "\"1\"");
    let got = app.get(&appointment, &patient).await;
    assert_eq!(
        own.header("content-length"),
        got.body.to_string().len().to_string()
    );
    let anonymous = head(appointment.clone(), None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.header("www-authenticate"), "Bearer");
    assert_eq!(
        head(appointment, Some(&other.token)).await.status,
        StatusCode::NOT_FOUND
    );
    // A path without a GET has no HEAD either.
    let login = head("/api/v1/auth/login".to_owned(), None).await;
    assert_eq!(login.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(login.header("allow"), "POST");
}

/// A method a path does not have is the JSON 405 with the path's methods in `Allow` (RFC 9110
/// requires the header); it was the 404 of an unknown path, which told a client that sent
/// `DELETE` to an appointment that the appointment did not exist. Like the 404 of a path no
/// route has, it does not depend on the token: the methods of a path are public (the OpenAPI
/// document lists them).
async fn a_method_a_path_does_not_have_is_405_with_allow(app: TestApp) {
    let patient = app.patient().await;
    let doctor = app.doctor().await;
    let id = app.booked(&patient, &doctor, &slot(2, 9, 0)).await;
    let appointment = format!("/api/v1/appointments/{id}");
    for (method, path, allow) in [
        (
            Method::DELETE,
            appointment.as_str(),
            "GET, HEAD, PUT, PATCH",
        ),
        (Method::POST, appointment.as_str(), "GET, HEAD, PUT, PATCH"),
        (Method::PUT, "/api/v1/appointments", "POST, GET, HEAD"),
        (Method::GET, "/api/v1/auth/login", "POST"),
        (Method::OPTIONS, "/healthz", "GET, HEAD"),
    ] {
        for token in [Some(patient.token.as_str()), Some("not-a-token"), None] {
            let answer = app.call(method.clone(), path, token, None).await;
            assert_eq!(
                (answer.status, answer.code(), answer.header("allow")),
                (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", allow),
                "{method} {path}"
            );
            assert!(
                answer.body["error"].as_str().unwrap().contains(allow),
                "{method} {path}: {:?}",
                answer.body
            );
        }
    }
    let no_route = app
        .call(
            Method::DELETE,
            "/api/v1/nothing",
            Some(&patient.token),
            None,
        )
        .await;
    assert_eq!(
        (no_route.status, no_route.code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    // Nothing was deleted.
    assert_eq!(app.get(&appointment, &patient).await.status, StatusCode::OK);
}

/// No answer may be kept by a cache, the browser's own included: they carry health data and
/// tokens (there was no `Cache-Control`, so a browser could store a prescription on disk). And
/// a browser must take a JSON answer for JSON. Successes, refusals and the operations routes
/// alike.
async fn no_cache_keeps_an_answer(app: TestApp) {
    let patient = app.patient().await;
    let doctor = app.doctor().await;
    let booked = app.book(&patient, &doctor, &slot(2, 9, 0), 30).await;
    assert_eq!(booked.status, StatusCode::CREATED);
    let appointment = format!("/api/v1/appointments/{}", booked.id());
    let login = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": PASSWORD})),
        )
        .await;
    let answers = [
        ("booking", booked),
        ("read", app.get(&appointment, &patient).await),
        (
            "HEAD",
            app.send(
                app.client
                    .head(format!("{}{appointment}", app.base))
                    .bearer_auth(&patient.token),
            )
            .await,
        ),
        ("me", app.get("/api/v1/me", &patient).await),
        ("refused login", login),
        (
            "no token",
            app.call(Method::GET, &appointment, None, None).await,
        ),
        (
            "not visible",
            app.get(&appointment, &app.patient().await).await,
        ),
        ("unknown path", app.get("/api/v1/nothing", &patient).await),
        (
            "wrong method",
            app.call(Method::DELETE, &appointment, Some(&patient.token), None)
                .await,
        ),
        (
            "invalid",
            app.put(&appointment, &patient, json!({"status": "done"}))
                .await,
        ),
        ("health", app.get("/healthz", &patient).await),
        ("OpenAPI", app.get("/api/v1/openapi.json", &patient).await),
    ];
    for (what, answer) in &answers {
        assert_eq!(answer.header("cache-control"), "no-store", "{what}");
        assert_eq!(answer.header("x-content-type-options"), "nosniff", "{what}");
    }
    let statuses: Vec<u16> = answers.iter().map(|(_, a)| a.status.as_u16()).collect();
    assert_eq!(
        statuses,
        [201, 200, 200, 200, 401, 401, 404, 404, 405, 422, 200, 200]
    );
}

/// A route that takes no query parameters refuses them (400), as a route that takes some
/// refuses unknown ones: they were ignored, so `?limit=1` on a history answered the whole
/// history and `?dry_run=1` on a booking booked. A bad token is still 401 first, and an error
/// quotes at most 100 characters of what the client sent.
async fn query_parameters_a_route_does_not_take_are_400(app: TestApp) {
    let patient = app.patient().await;
    let doctor = app.doctor().await;
    let id = app.booked(&patient, &doctor, &slot(2, 9, 0)).await;
    let history = app
        .get(
            &format!("/api/v1/appointments/{id}/history?limit=1"),
            &patient,
        )
        .await;
    assert_eq!(
        (history.status, history.code()),
        (StatusCode::BAD_REQUEST, "BAD_REQUEST")
    );
    assert!(history.body["error"].as_str().unwrap().contains("limit=1"));
    let dry_run = app
        .post(
            "/api/v1/appointments?dry_run=1",
            &patient,
            json!({"doctor_id": doctor.id, "scheduled_at": slot(3, 9, 0), "type": "in_person"}),
        )
        .await;
    assert_eq!(dry_run.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("SELECT COUNT(*) FROM appointments"), 1);
    let register = app
        .call(
            Method::POST,
            "/api/v1/auth/register?role=admin",
            None,
            Some(json!({"name": "Eve", "email": "eve@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(register.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = 'eve@example.com'"),
        0
    );
    let unknown_token = app
        .call(Method::GET, "/api/v1/me?x=1", Some("not-a-token"), None)
        .await;
    assert_eq!(unknown_token.status, StatusCode::UNAUTHORIZED);
    // Every route without parameters, each once; a bare `?` is no parameter.
    for path in [
        format!("/api/v1/appointments/{id}?x=1"),
        format!("/api/v1/appointments/{id}/prescription?x=1"),
        format!("/api/v1/doctors/{}?x=1", doctor.id),
        "/api/v1/me?x=1".to_owned(),
        "/api/v1/admin/lock-stats?x=1".to_owned(),
    ] {
        let answer = app.get(&path, &app.admin).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(
        app.get("/api/v1/me?", &patient).await.status,
        StatusCode::OK
    );
    let long = "x".repeat(20_000);
    for path in [
        format!("/api/v1/me?{long}=1"),
        format!("/api/v1/appointments?{long}=1"),
    ] {
        let answer = app.get(&path, &patient).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        let message = answer.body["error"].as_str().unwrap();
        assert!(message.len() < 300 && message.contains('…'), "{message}");
    }
}

/// `GET`/`HEAD` with `If-None-Match` naming the current `ETag` answers `304` with that `ETag`
/// and no body (RFC 9110 requires it of a server that sends ETags; it answered `200` with the
/// whole resource). After a change, the old tag gets `200` and the new one. Refusals stay
/// refusals, and a resource without an `ETag` (a list) is always read.
async fn a_read_whose_etag_the_client_has_is_304(app: TestApp) {
    let patient = app.patient().await;
    let doctor = app.doctor().await;
    let id = app.booked(&patient, &doctor, &slot(2, 9, 0)).await;
    let path = format!("/api/v1/appointments/{id}");
    let read = |method: Method, path: String, token: String, tag: &'static str| {
        app.send(
            app.client
                .request(method, format!("{}{path}", app.base))
                .bearer_auth(token)
                .header("If-None-Match", tag),
        )
    };
    let token = patient.token.clone();
    for tag in ["\"1\"", "W/\"1\"", "\"7\", \"1\"", "*"] {
        let answer = read(Method::GET, path.clone(), token.clone(), tag).await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(answer.header("etag"), "\"1\"", "{tag}");
        assert_eq!(answer.body, serde_json::Value::Null, "{tag}");
        assert_eq!(answer.header("cache-control"), "no-store");
    }
    let head = read(Method::HEAD, path.clone(), token.clone(), "\"1\"").await;
    assert_eq!(head.status, StatusCode::NOT_MODIFIED);
    let other = read(Method::GET, path.clone(), token.clone(), "\"2\"").await;
    assert_eq!(
        (other.status, other.body["version"].as_i64()),
        (StatusCode::OK, Some(1))
    );

    app.walk(id, &doctor, &["confirmed"]).await;
    let changed = read(Method::GET, path.clone(), token.clone(), "\"1\"").await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.header("etag"), "\"2\"");
    assert_eq!(changed.body["status"], "confirmed");
    let again = read(Method::GET, path.clone(), token.clone(), "\"2\"").await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);

    // Refusals and resources without an ETag are answered as without the header.
    let stranger = app.patient().await;
    let hidden = read(Method::GET, path.clone(), stranger.token.clone(), "*").await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let anonymous = app
        .send(
            app.client
                .get(format!("{}{path}", app.base))
                .header("If-None-Match", "*"),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let list = read(
        Method::GET,
        "/api/v1/appointments".into(),
        token.clone(),
        "*",
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    let me = read(Method::GET, "/api/v1/me".into(), token.clone(), "\"1\"").await;
    assert_eq!(me.status, StatusCode::NOT_MODIFIED);
    // A change's condition is If-Match: one with If-None-Match is refused, not made as if
    // the condition held.
    let update = app
        .send(
            app.client
                .put(format!("{}{path}", app.base))
                .bearer_auth(&doctor.token)
                .header("If-None-Match", "\"1\"")
                .json(&json!({"status": "in_progress"})),
        )
        .await;
    assert_eq!(
        (update.status, update.code()),
        (StatusCode::BAD_REQUEST, "BAD_REQUEST")
    );
    assert_eq!(app.get(&path, &patient).await.body["status"], "confirmed");
}

/// The origin the CORS test allows.
const APP: &str = "https://app.example.com";

async fn cors_preflight(app: &TestApp, origin: &str) -> common::Answer {
    let req = app
        .client
        .request(Method::OPTIONS, format!("{}/api/v1/appointments", app.base))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type, idempotency-key",
        );
    app.send(req).await
}

async fn me_from(app: &TestApp, origin: &str, token: &str) -> common::Answer {
    let req = app
        .client
        .get(format!("{}/api/v1/me", app.base))
        .header("Origin", origin)
        .bearer_auth(token);
    app.send(req).await
}

/// Browser apps on the origins `MEDBOOK_CORS_ORIGINS` names may call the API: a preflight is
/// answered, and every answer to them is readable (refusals included) with the headers a client
/// needs exposed. Other origins get no CORS header, and a refused preflight is the JSON 403.
async fn browser_apps_on_allowed_origins_may_call_the_api(backend: Backend) {
    let cors = medbook::cors::AllowedOrigins::parse(Some(&format!("{APP}, http://localhost:5173")))
        .unwrap();
    let Some(app) = TestApp::start_with(backend, |c| c.cors = cors).await else {
        return;
    };
    let patient = app.patient().await;

    let allowed = cors_preflight(&app, APP).await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT, "{:?}", allowed.body);
    assert_eq!(allowed.header("access-control-allow-origin"), APP);
    assert!(allowed
        .header("access-control-allow-methods")
        .contains("PATCH"));
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        "authorization, content-type, idempotency-key"
    );
    assert_eq!(allowed.header("access-control-max-age"), "3600");
    assert_eq!(allowed.header("cache-control"), "no-store");
    assert_eq!(allowed.header("vary"), "Origin");

    let refused = cors_preflight(&app, "https://elsewhere.example").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    assert_eq!(refused.header("access-control-allow-origin"), "");

    let ok = me_from(&app, APP, &patient.token).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("access-control-allow-origin"), APP);
    for exposed in ["ETag", "Location", "Retry-After", "WWW-Authenticate"] {
        assert!(
            ok.header("access-control-expose-headers").contains(exposed),
            "{exposed}"
        );
    }
    // A refusal is readable too: the token check's 401, also when the middleware that
    // checks the tokens of early refusals answers it.
    let unauthenticated = me_from(&app, APP, "not-a-token").await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unauthenticated.header("access-control-allow-origin"), APP);
    let req = app
        .client
        .patch(format!("{}/api/v1/appointments/1", app.base))
        .header("Origin", APP)
        .bearer_auth("not-a-token")
        .header(CONTENT_TYPE, "text/plain")
        .body("x");
    let early = app.send(req).await;
    assert_eq!(early.status, StatusCode::UNAUTHORIZED);
    assert_eq!(early.header("access-control-allow-origin"), APP);

    // Another origin is answered as before, without CORS headers (its browser hides the
    // answer); so is a request without an Origin, and an OPTIONS that is no preflight.
    let other = me_from(&app, "https://elsewhere.example", &patient.token).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.header("access-control-allow-origin"), "");
    let plain = app.get("/api/v1/me", &patient).await;
    assert_eq!(plain.header("access-control-allow-origin"), "");
    let options = app
        .call(Method::OPTIONS, "/api/v1/appointments", None, None)
        .await;
    assert_eq!(options.code(), "METHOD_NOT_ALLOWED");

    // Without MEDBOOK_CORS_ORIGINS a preflight is the JSON 405 of any OPTIONS.
    let Some(closed) = TestApp::start(backend).await else {
        return;
    };
    let preflight = cors_preflight(&closed, APP).await;
    assert_eq!(preflight.code(), "METHOD_NOT_ALLOWED");
    assert_eq!(preflight.header("access-control-allow-origin"), "");
}

/// Moves the issue time of every token of `user` `hours` into the past.
fn age_tokens(app: &TestApp, user: i64, hours: i64) {
    let at = chrono::Utc::now().naive_utc() - chrono::Duration::hours(hours);
    app.sql(&format!(
        "UPDATE api_tokens SET created_at = '{}' WHERE user_id = {user}",
        at.format("%Y-%m-%d %H:%M:%S%.6f")
    ));
}

/// With `MEDBOOK_TOKEN_TTL_HOURS` a token stops authenticating that long after it was issued
/// (401, as for a revoked one, in both token lookups), a new login works, and the purge
/// deletes the expired rows. Without it a token does not expire.
async fn tokens_expire_after_the_configured_lifetime(backend: Backend) {
    let ttl = std::time::Duration::from_secs(3600);
    let Some(app) = TestApp::start_with(backend, |c| c.token_ttl = Some(ttl)).await else {
        return;
    };
    let patient = app.patient().await;
    let me = app.get("/api/v1/me", &patient).await;
    assert_eq!(me.status, StatusCode::OK);
    let email = me.body["email"].as_str().unwrap().to_owned();
    age_tokens(&app, patient.id, 2);
    let expired = app.get("/api/v1/me", &patient).await;
    assert_eq!(
        (expired.status, expired.code()),
        (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
    );
    assert_eq!(expired.header("www-authenticate"), "Bearer");
    // The lookup that also reads an appointment refuses it too.
    let joined = app.get("/api/v1/appointments/1", &patient).await;
    assert_eq!(joined.status, StatusCode::UNAUTHORIZED);

    // A new login gets a new token; the purge deletes the expired one and keeps it.
    let fresh = app.login(&email, PASSWORD).await;
    assert_eq!(app.get("/api/v1/me", &fresh).await.status, StatusCode::OK);
    let tokens = |app: &TestApp| {
        app.count(&format!(
            "SELECT COUNT(*) FROM api_tokens WHERE user_id = {}",
            patient.id
        ))
    };
    assert_eq!(tokens(&app), 2);
    let pool = app.service_pool();
    let mut conn = pool.get().expect("connection");
    let cutoff = medbook::auth::issued_after(chrono::Duration::from_std(ttl).ok()).unwrap();
    medbook::services::auth::purge_expired_tokens(&mut conn, &Default::default(), cutoff)
        .expect("purge");
    assert_eq!(tokens(&app), 1);
    assert_eq!(app.get("/api/v1/me", &fresh).await.status, StatusCode::OK);

    // Without a lifetime, a token issued years ago still works.
    let Some(lasting) = TestApp::start(backend).await else {
        return;
    };
    let old = lasting.patient().await;
    age_tokens(&lasting, old.id, 24 * 365 * 5);
    assert_eq!(lasting.get("/api/v1/me", &old).await.status, StatusCode::OK);
}
