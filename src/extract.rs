//! Request extractors that answer in the API's error shape: a JSON body with a 64 KiB limit,
//! query strings, path ids, and the expected version from `If-Match` or the body.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The value of a header that a request may carry once, or `Err` if it carries it more than
/// once. actix keeps every line of a repeated header, and `get` returns the first: a second
/// `Idempotency-Key`, `If-Match` or `Content-Type` was ignored, so the request was judged by
/// half of what it said. (RFC 9110 §5.3: only a list may be split over several lines, and
/// medbook takes none of these as a list.)
pub fn sole_header<'a>(
    req: &'a HttpRequest,
    name: &header::HeaderName,
) -> Result<Option<&'a header::HeaderValue>, AppError> {
    let mut values = req.headers().get_all(name);
    let first = values.next();
    match values.next() {
        None => Ok(first),
        Some(_) => Err(AppError::BadRequest(format!(
            "{name} is sent more than once: send it once"
        ))),
    }
}

/// A JSON request body. Invalid JSON or a non-JSON content type → 400; JSON of the wrong shape
/// (missing, unknown or mistyped fields) → 422 with the failing field in `details`; more than
/// [`BODY_LIMIT`] bytes → 413. An empty body reads as `{}`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = sole_header(req, &header::CONTENT_TYPE);
        let encoding = sole_header(req, &header::CONTENT_ENCODING);
        let (content_type, encoding) = match (content_type, encoding) {
            (Ok(content_type), Ok(encoding)) => (content_type, encoding),
            (Err(e), _) | (_, Err(e)) => return Box::pin(async move { Err(e) }),
        };
        let content_type_ok = content_type.and_then(|v| v.to_str().ok()).map(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
        // Request bodies are read as sent: a compressed one would only fail as "not JSON".
        let encoding = encoding
            .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty() && v != "identity");
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        let req = req.clone();
        Box::pin(async move {
            if declared_len.is_some_and(|len| len > BODY_LIMIT) {
                return Err(AppError::PayloadTooLarge(BODY_LIMIT));
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|e| AppError::BadRequest(format!("Could not read body: {e}")))?;
                if body.len() + chunk.len() > BODY_LIMIT {
                    return Err(AppError::PayloadTooLarge(BODY_LIMIT));
                }
                body.extend_from_slice(&chunk);
            }
            req.extensions_mut()
                .insert(BodyDigest(Sha256::digest(&body).into()));
            if body.iter().all(u8::is_ascii_whitespace) {
                return parse_json::<T>(b"{}").map(Json);
            }
            if let Some(encoding) = encoding {
                return Err(AppError::BadRequest(format!(
                    "Content-Encoding {encoding} is not supported: send the body uncompressed"
                )));
            }
            if content_type_ok == Some(false) {
                return Err(AppError::BadRequest(
                    "Content-Type must be application/json".to_owned(),
                ));
            }
            parse_json::<T>(&body).map(Json)
        })
    }
}

/// SHA-256 of the raw request body, left in the request's extensions by [`Json`] (the
/// idempotency fingerprint needs it after the body was consumed).
#[derive(Debug, Clone, Copy)]
pub struct BodyDigest(pub [u8; 32]);

/// A value taken from a JSON object only.
///
/// serde's derived structs also take a JSON array, field by field in the order they are
/// declared: `["Pat", "p@x.io", "password1"]` registered a patient, and a medication could be
/// `["Ibuprofen", "200 mg", "3x daily"]`. A request names its fields; an array (or any other
/// value) where an object belongs is `422`, "expected a JSON object". The request bodies are
/// read through it ([`parse_json`]), and so are the objects nested in them ([`objects`]).
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Fields(std::marker::PhantomData))
            .map(Object)
    }
}

/// `#[serde(deserialize_with)]` for a list of objects ([`Object`]).
pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    Vec::<Object<T>>::deserialize(deserializer).map(unwrap_objects)
}

/// [`objects`] for an optional list (`null` is `None`; a missing one needs `#[serde(default)]`).
pub fn optional_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Option::<Vec<Object<T>>>::deserialize(deserializer).map(|list| list.map(unwrap_objects))
}

fn unwrap_objects<T>(list: Vec<Object<T>>) -> Vec<T> {
    list.into_iter().map(|Object(value)| value).collect()
}

/// Parses JSON, telling a body that is not JSON (400) from JSON of the wrong shape (422 naming
/// the field), an object ([`Object`]). Text after the JSON value is not JSON either (`{…}
/// garbage` was taken as `{…}`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            return not_json(inner);
        }
        // serde stops at the first error it meets: in `{"x":` that is the unknown field, before
        // the missing end. Only a body that is JSON gets the shape error (checked on this error
        // path only).
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return not_json(syntax);
        }
        let field = if path == "." { "body".to_owned() } else { path };
        AppError::invalid(&field, strip_position(&inner.to_string()))
    })?;
    de.end().map_err(not_json)?;
    let Object(value) = value;
    Ok(value)
}

fn not_json(err: serde_json::Error) -> AppError {
    AppError::BadRequest(format!("Body is not valid JSON: {err}"))
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Parses a query string into `T` (whose fields are all optional strings or numbers and which
/// denies unknown fields); a malformed query or unknown parameter → 400.
pub fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, AppError> {
    serde_urlencoded::from_str(req.query_string()).map_err(|e| {
        AppError::BadRequest(format!("Invalid query string: {}", echo(&e.to_string())))
    })
}

/// For a route that takes no query parameters: a query string is 400, as an unknown parameter
/// of a route that takes some is. A parameter the route would ignore must not pass for obeyed
/// (`?limit=1` on a history that is always whole, `?dry_run=1` on a booking that books).
#[derive(Debug)]
pub struct NoQuery;

impl FromRequest for NoQuery {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(match req.query_string() {
            "" => Ok(NoQuery),
            query => Err(AppError::BadRequest(format!(
                "This route takes no query parameters (got {})",
                echo(query)
            ))),
        })
    }
}

/// Client input quoted in an error message, cut to its first 100 characters: an answer
/// should not grow with whatever the client sent.
fn echo(text: &str) -> std::borrow::Cow<'_, str> {
    const LIMIT: usize = 100;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
        None => text.into(),
    }
}

/// An optional time query parameter; unparsable → 422 naming the parameter.
pub fn time_param(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<chrono::NaiveDateTime>, AppError> {
    raw.map(|raw| crate::time::parse(raw).map_err(|e| AppError::invalid(field, plus_hint(raw, e))))
        .transpose()
}

/// A query string reads `+` as a space, as an HTML form sends one: an offset sent unencoded
/// (`…T10:00:00+02:00`) arrives as `…T10:00:00 02:00`. Where the `+` put back makes a time, the
/// message says how to send it; the time is not guessed.
fn plus_hint(raw: &str, message: String) -> String {
    let unencoded = raw
        .trim()
        .rsplit_once(' ')
        .filter(|(time, offset)| crate::time::parse(&format!("{time}+{offset}")).is_ok());
    match unencoded {
        Some((_, offset)) => format!(
            "{message}; a + in a query string reads as a space: send the offset as %2B{offset}"
        ),
        None => message,
    }
}

/// A path segment that must be a positive integer id; anything else cannot name a resource: 404.
pub fn path_id(req: &HttpRequest, name: &str) -> Result<i32, AppError> {
    req.match_info()
        .get(name)
        .and_then(|raw| raw.parse::<i32>().ok())
        .filter(|id| *id > 0)
        .ok_or(AppError::NotFound)
}

/// Where the expected version of an update came from; it decides 409 vs 412 on a mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The body's `version` field: a mismatch is 409 `VERSION_CONFLICT`.
    Body(i32),
    /// `If-Match: "<version>"`: a mismatch is 412.
    IfMatch(i32),
    /// Neither: the server applies the change to the version it reads.
    Latest,
}

impl Expected {
    /// Combines `If-Match` and the body's `version`. When both are present they must agree.
    pub fn from_request(req: &HttpRequest, body_version: Option<i32>) -> Result<Self, AppError> {
        // A condition this change would not evaluate must not pass for met: `If-None-Match`
        // is evaluated on reads (`conditional`), a change's condition is `If-Match`.
        if req.headers().contains_key(header::IF_NONE_MATCH) {
            return Err(AppError::BadRequest(
                "If-None-Match is for reads (GET, HEAD); make a change conditional with If-Match"
                    .to_owned(),
            ));
        }
        let if_match = match sole_header(req, &header::IF_MATCH)? {
            None => None,
            Some(value) => Some(parse_if_match(value.to_str().unwrap_or(""))?),
        };
        match (if_match, body_version) {
            (Some(Some(a)), Some(b)) if a != b => Err(AppError::invalid(
                "version",
                "the body's version and If-Match disagree",
            )),
            (Some(Some(v)), _) => Ok(Expected::IfMatch(v)),
            (_, Some(v)) => Ok(Expected::Body(v)),
            _ => Ok(Expected::Latest),
        }
    }
}

/// `"3"`, `W/"3"` and `3` name version 3; `*` matches any version (`None`).
fn parse_if_match(raw: &str) -> Result<Option<i32>, AppError> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(None);
    }
    let unquoted = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    unquoted
        .parse::<i32>()
        .map(Some)
        .map_err(|_| AppError::BadRequest("If-Match must be an ETag like \"3\"".to_owned()))
}

/// The `ETag` header value of a version.
pub fn etag(version: i32) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{version}\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        doctor_id: i32,
    }

    #[test]
    fn an_echo_is_cut_at_a_character_after_100() {
        assert_eq!(echo("limit=1"), "limit=1");
        let exact = "é".repeat(100);
        assert_eq!(echo(&exact), exact);
        let long = "é".repeat(101);
        assert_eq!(echo(&long), format!("{}…", "é".repeat(100)));
    }

    #[test]
    fn bodies_and_the_objects_in_them_are_objects_not_arrays() {
        fn invalid(body: &[u8]) -> BTreeMap<String, String> {
            match parse_json::<crate::services::prescriptions::CreateInput>(body) {
                Err(AppError::Validation { details, .. }) => details,
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        for body in [
            &br#"[1, [["A", "1 mg", "daily"]]]"#[..],
            b"[]",
            b"\"x\"",
            b"1",
            b"null",
        ] {
            let details = invalid(body);
            assert!(
                details["body"].ends_with("expected a JSON object"),
                "{details:?}"
            );
        }
        let details = invalid(br#"{"appointment_id": 1, "medications": [["A", "1 mg", "daily"]]}"#);
        assert!(
            details["medications[0]"].ends_with("expected a JSON object"),
            "{details:?}"
        );
        // Objects are read as before, field by field and by name.
        let input = parse_json::<crate::services::prescriptions::CreateInput>(
            br#"{"medications": [{"frequency": "daily", "name": "A", "dosage": "1 mg"}], "appointment_id": 1}"#,
        )
        .unwrap();
        assert_eq!(
            (input.appointment_id, input.medications[0].name.as_str()),
            (1, "A")
        );
        let details = invalid(br#"{"appointment_id": 1, "medications": [{"name": "A", "x": 1}]}"#);
        assert!(details.contains_key("medications[0].x"), "{details:?}");
        assert!(matches!(
            parse_json::<crate::services::prescriptions::UpdateInput>(br#"{"medications": [[]]}"#),
            Err(AppError::Validation { .. })
        ));
        let update =
            parse_json::<crate::services::prescriptions::UpdateInput>(br#"{"medications": null}"#)
                .unwrap();
        assert!(update.medications.is_none());
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_422_with_the_field() {
        assert_eq!(parse_json::<Body>(b"{").unwrap_err().code(), "BAD_REQUEST");
        // Not JSON, although serde meets a shape error first, or parses a value before the rest.
        for not_json in [
            &br#"{"x":"#[..],
            br#"{"doctor_id":"x","#,
            br#"{"doctor_id":1} trailing"#,
            br#"{"doctor_id":1}{}"#,
            br#"{"doctor_id":1},"#,
        ] {
            let err = parse_json::<Body>(not_json).unwrap_err();
            assert_eq!(
                err.code(),
                "BAD_REQUEST",
                "{}",
                String::from_utf8_lossy(not_json)
            );
        }
        assert_eq!(
            parse_json::<Body>(b" {\"doctor_id\":1} \r\n\t")
                .unwrap()
                .doctor_id,
            1
        );
        match parse_json::<Body>(br#"{"doctor_id":"x"}"#).unwrap_err() {
            AppError::Validation { details, .. } => assert!(details.contains_key("doctor_id")),
            other => panic!("{other:?}"),
        }
        match parse_json::<Body>(b"{}").unwrap_err() {
            AppError::Validation { details, .. } => {
                assert!(details["body"].contains("doctor_id"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_offset_sent_with_an_unencoded_plus_is_named() {
        let said = |raw: &str| match time_param("from", Some(raw)).unwrap_err() {
            AppError::Validation { details, .. } => details["from"].clone(),
            other => panic!("{other:?}"),
        };
        assert!(said("2030-01-20T10:00:00 02:00").ends_with("send the offset as %2B02:00"));
        assert!(said("2030-01-20 10:00:00.5 05:30").ends_with("send the offset as %2B05:30"));
        // Nothing to name where a + would not make a time.
        for raw in [
            "2030-01-20T10:00:00 99:00",
            "next monday",
            "2030-01-20 25:00:00",
        ] {
            assert!(!said(raw).contains("%2B"), "{raw}");
        }
        // The plain UTC form, with its space, is a time.
        assert!(time_param("from", Some("2030-01-20 10:00:00")).is_ok());
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(parse_if_match("\"3\"").unwrap(), Some(3));
        assert_eq!(parse_if_match("W/\"4\"").unwrap(), Some(4));
        assert_eq!(parse_if_match("*").unwrap(), None);
        assert!(parse_if_match("\"abc\"").is_err());
    }

    #[test]
    fn if_match_and_body_version_combine() {
        let req = TestRequest::default()
            .insert_header((header::IF_MATCH, "\"2\""))
            .to_http_request();
        assert_eq!(
            Expected::from_request(&req, None).unwrap(),
            Expected::IfMatch(2)
        );
        assert!(Expected::from_request(&req, Some(3)).is_err());
        let plain = TestRequest::default().to_http_request();
        assert_eq!(
            Expected::from_request(&plain, Some(5)).unwrap(),
            Expected::Body(5)
        );
        assert_eq!(
            Expected::from_request(&plain, None).unwrap(),
            Expected::Latest
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::services::appointments::UpdateInput;
    use crate::services::booking::BookingInput;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("doctor_id".to_owned()),
                        Just("scheduled_at".to_owned()),
                        Just("type".to_owned()),
                        Just("status".to_owned()),
                        "[a-z_]{1,10}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn is_client_error(err: &AppError) -> bool {
        matches!(err.code(), "BAD_REQUEST" | "VALIDATION_FAILED")
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_a_400_or_422_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Err(err) = parse_json::<BookingInput>(&bytes) {
                prop_assert!(is_client_error(&err));
            }
        }

        #[test]
        fn arbitrary_json_is_parsed_or_a_422(value in json_value()) {
            let bytes = serde_json::to_vec(&value).unwrap();
            for result in [
                parse_json::<BookingInput>(&bytes).map(drop),
                parse_json::<UpdateInput>(&bytes).map(drop),
            ] {
                if let Err(err) = result {
                    prop_assert_eq!(err.code(), "VALIDATION_FAILED");
                }
            }
        }
    }
}
