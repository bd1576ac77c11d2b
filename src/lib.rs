//! medbook: a telemedicine appointment API where concurrency never corrupts a booking.
//!
//! A request flows one way: `routes` (HTTP) → `services` (one transaction, all the rules)
//! → `models` (diesel structs and small queries) → `schema`.

pub mod auth;
pub mod conditional;
pub mod config;
pub mod cors;
pub mod db;
pub mod domain;
pub mod error;
pub mod extract;
pub mod models;
pub mod routes;
pub mod schema;
pub mod server;
pub mod services;
pub mod telemetry;
pub mod time;

pub use error::AppError;
