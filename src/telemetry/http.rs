//! HTTP request metrics by route template, method and status, and the middleware that records
//! them (and counts 409s by code into the lock statistics).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::histogram::AtomicHistogram;
use crate::error::AppError;
use crate::server::AppState;

type Key = (String, String, u16);

/// The Prometheus labels of a series.
fn labels((route, method, status): &Key) -> [(&'static str, String); 3] {
    [
        ("route", route.clone()),
        ("method", method.clone()),
        ("status", status.to_string()),
    ]
}

#[derive(Debug, Default)]
struct Series {
    count: AtomicU64,
    latency: AtomicHistogram,
}

/// Requests by (route template, method, status).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Read-locked per request; write-locked only when a new (route, method, status) appears,
    /// and there are few of those (route templates, not raw paths).
    series: RwLock<HashMap<Key, Arc<Series>>>,
}

impl HttpStats {
    /// Records one request.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: std::time::Duration) {
        let key = (route.to_owned(), method.to_owned(), status);
        let existing = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let series = match existing {
            Some(series) => series,
            None => Arc::clone(
                self.series
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key)
                    .or_default(),
            ),
        };
        series.count.fetch_add(1, Relaxed);
        series.latency.record(elapsed);
    }

    /// Total requests recorded for a route template and status (for tests and the dashboard).
    pub fn count(&self, route: &str, status: u16) -> u64 {
        self.series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((r, _, s), _)| r == route && *s == status)
            .map(|(_, series)| series.count.load(Relaxed))
            .sum()
    }

    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series: Vec<(Key, Arc<Series>)> = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        {
            let mut family = encoder.encode_descriptor(
                "http_requests",
                "HTTP requests by route template, method and status",
                None,
                MetricType::Counter,
            )?;
            for (key, s) in &series {
                ConstCounter::new(s.count.load(Relaxed))
                    .encode(family.encode_family(&labels(key))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "http_request_duration",
            "HTTP request latency by route template, method and status",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (key, s) in &series {
            let snapshot = s.latency.snapshot();
            family
                .encode_family(&labels(key))?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    snapshot.sum_seconds(),
                    snapshot.count,
                    &snapshot.prometheus_buckets(),
                    None,
                )?;
        }
        Ok(())
    }
}

/// A request's method as a label: the standard methods by name, any other as `other`. Clients
/// choose the method (actix accepts any token), and a series per made-up method would let
/// them grow the process's memory and `/metrics` without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Middleware: times every request, records it by route template, and counts 409s by code.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(req).await?;
    if let Some(state) = state {
        let request = response.request();
        // Asked after routing, the template is looked up by the route that matched; before
        // it, actix would match the path against every template again (a regex each).
        let route = request.match_pattern();
        let status = response.status().as_u16();
        state.telemetry.http.record(
            route.as_deref().unwrap_or("unmatched"),
            method_label(request.method()),
            status,
            started.elapsed(),
        );
        if let Some(code) = response
            .response()
            .error()
            .and_then(|e| e.as_error::<AppError>())
            .and_then(AppError::conflict_code)
        {
            state.telemetry.locks.conflict(code);
        }
    }
    Ok(response)
}
