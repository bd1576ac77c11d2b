//! The timed requests' client: each load-generating client holds one keep-alive HTTP/1.1
//! connection of its own and sends on it one request at a time, through hyper's
//! connection-level API.
//!
//! Why not the shared `reqwest::Client` that set-up and the invariant check use: on this
//! two-core machine every microsecond the load generator spends is taken from medbook or
//! PostgreSQL (pgbench's own client, the other side of the comparison, took 33 µs per
//! `status.sql` transaction at 16 clients; reqwest 38 µs per request, this 22). What reqwest
//! does per request that this does not: a URL parsed, a connection checked out of a pool
//! shared behind a lock, the body built as a `serde_json::Value`, and every answer parsed into
//! one. Per request this takes 35–42 % less CPU than reqwest did, and medbook served 2–7 %
//! more under it (BENCHMARKS.md, "What changed", second round after run BD).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What one request came to: the HTTP status and, for an error answer (4xx, 5xx), its `code`;
/// or why no answer came.
pub type Outcome = Result<(u16, Option<String>), String>;

/// How long one request may take before it counts as failed (reqwest's timeout was the same).
const TIMEOUT: Duration = Duration::from_secs(60);

/// One request to send.
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    /// `Bearer …`, from [`bearer`].
    pub authorization: &'a HeaderValue,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    pub idempotency_key: Option<&'a str>,
}

/// One client's connection to the server at a base URL (`http://host:port`).
pub struct Conn {
    addr: String,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// Does not connect yet: the first [`send`](Self::send) does.
    pub fn new(base: &str) -> Conn {
        let addr = base
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let host = HeaderValue::from_str(&addr).expect("a host:port in the URL");
        Conn {
            addr,
            host,
            sender: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // The connection's I/O runs as a task of its own; it ends when the sender is dropped.
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Sends one request and reads its whole answer. A failed request drops the connection;
    /// the next one opens a new one.
    pub async fn send(&mut self, call: Call<'_>) -> Outcome {
        let outcome = tokio::time::timeout(TIMEOUT, self.exchange(call))
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()));
        if outcome.is_err() {
            self.sender = None;
        }
        outcome
    }

    async fn exchange(&mut self, call: Call<'_>) -> Outcome {
        // A connection the server closed (after answering on it) is replaced before it is
        // used, so that its end does not count as a failed request.
        if self.sender.as_ref().is_some_and(SendRequest::is_closed) {
            self.sender = None;
        }
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => self.sender.insert(self.connect().await?),
        };
        let mut request = Request::builder()
            .method(call.method)
            .uri(call.path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, call.authorization.clone());
        if let Some(key) = call.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if call.body.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request
            .body(Full::new(call.body.map(Bytes::from).unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        // Only an error answer is read: its `code` names the outcome ("409 SLOT_TAKEN").
        let code = (status >= 400)
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|v| v["code"].as_str().map(str::to_owned));
        Ok((status, code))
    }
}

/// `Authorization: Bearer …` for a token, made once per client.
pub fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("a token fit for a header")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads one request (head and `Content-Length` body) off `stream`, as text.
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed before a whole request");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if buf.len() >= head_end + 4 + length {
                    return text;
                }
            }
        }
    }

    fn answer(status: &str, body: &str, close: bool) -> Vec<u8> {
        let connection = if close { "connection: close\r\n" } else { "" };
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{connection}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// What the timed requests send and how their answers are counted, over a connection the
    /// server closes after its second answer.
    #[tokio::test]
    async fn sends_the_request_counts_the_answer_and_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (mut first, _) = listener.accept().await.unwrap();
            seen.push(read_request(&mut first).await);
            first
                .write_all(&answer(
                    "409 Conflict",
                    r#"{"code":"SLOT_TAKEN","message":"taken"}"#,
                    false,
                ))
                .await
                .unwrap();
            seen.push(read_request(&mut first).await);
            first
                .write_all(&answer(
                    "201 Created",
                    r#"{"id":7,"code":"not an error"}"#,
                    true,
                ))
                .await
                .unwrap();
            drop(first);
            let (mut second, _) = listener.accept().await.unwrap();
            seen.push(read_request(&mut second).await);
            second
                .write_all(&answer("200 OK", "{}", false))
                .await
                .unwrap();
            seen
        });

        let mut conn = Conn::new(&format!("http://{addr}"));
        let auth = bearer("tok");
        let call = |method, path, body: Option<&[u8]>, idempotency_key| Call {
            method,
            path,
            authorization: &auth,
            body: body.map(<[u8]>::to_vec),
            idempotency_key,
        };
        let booking = call(
            Method::POST,
            "/api/v1/appointments",
            Some(br#"{"doctor_id":3}"#),
            Some("k-1"),
        );
        assert_eq!(
            conn.send(booking).await,
            Ok((409, Some("SLOT_TAKEN".to_owned())))
        );
        // A 2xx answer's body is not read for a code.
        assert_eq!(
            conn.send(call(Method::GET, "/readyz", None, None)).await,
            Ok((201, None))
        );
        // The server closed that connection: the next request goes on a new one, not an error.
        let waiting = async {
            while !conn.sender.as_ref().is_some_and(SendRequest::is_closed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the client sees the connection closed");
        let update = call(Method::PUT, "/api/v1/appointments/5", Some(b"{}"), None);
        assert_eq!(conn.send(update).await, Ok((200, None)));

        let seen = server.await.unwrap();
        let first = seen[0].to_ascii_lowercase();
        assert!(
            first.starts_with("post /api/v1/appointments http/1.1\r\n"),
            "{first}"
        );
        for header in [
            format!("host: {addr}\r\n"),
            "authorization: bearer tok\r\n".to_owned(),
            "content-type: application/json\r\n".to_owned(),
            "content-length: 15\r\n".to_owned(),
            "idempotency-key: k-1\r\n".to_owned(),
        ] {
            assert!(first.contains(&header), "{header:?} not in {first}");
        }
        assert!(first.ends_with("\r\n\r\n{\"doctor_id\":3}"), "{first}");
        let second = seen[1].to_ascii_lowercase();
        assert!(second.starts_with("get /readyz http/1.1\r\n"), "{second}");
        assert!(!second.contains("content-type"), "{second}");
        assert!(seen[2].starts_with("PUT /api/v1/appointments/5 HTTP/1.1\r\n"));
    }

    /// A server that is not there is an outcome (an error), not a panic, and so is the next try.
    #[tokio::test]
    async fn a_refused_connection_is_an_error_outcome() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut conn = Conn::new(&format!("http://{addr}/"));
        let auth = bearer("t");
        for _ in 0..2 {
            let ping = Call {
                method: Method::GET,
                path: "/healthz",
                authorization: &auth,
                body: None,
                idempotency_key: None,
            };
            let outcome = conn.send(ping).await;
            assert!(
                outcome.as_ref().is_err_and(|e| e.starts_with("connect: ")),
                "{outcome:?}"
            );
        }
    }
}
