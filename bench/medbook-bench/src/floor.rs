//! `floor-server`: the least an HTTP service built like medbook (actix-web, medbook's r2d2
//! pool and `run_blocking`, diesel on the concrete connection) can do for the `status` and
//! `spread` scenarios, with no authentication, no validation, no retries, no metrics and a
//! short JSON answer:
//! - `PUT /api/v1/appointments/{id}` runs exactly `bench/pgbench/status.sql`: read the
//!   version and status; then medbook's own statement, the `UPDATE … WHERE id = ? AND
//!   version = ?` and its history row in one (`models::appointment::update_logged`).
//! - `POST /api/v1/appointments` runs exactly `bench/pgbench/booking.sql`, through medbook's
//!   own statements: BEGIN; lock both users' rows in id order; the two bounded overlap
//!   queries; the appointment and its history row; COMMIT. With no token to check, the
//!   client names the patient in the body (`patient_id`, which `medbook-bench` adds when it
//!   is pointed here with `--target-url`).
//!
//! Not a service (anyone may change or book anything): `bench/run.sh` measures it beside
//! medbook and pgbench, so that the table shows how much of the distance to pgbench is the
//! stack's and how much is medbook's own.

use actix_web::{web, App, HttpResponse, HttpServer};
use diesel::prelude::*;
use medbook::db::{lock_users_in_order, run_blocking, write_transaction, DbPool};
use medbook::error::AppError;
use medbook::models::appointment::{self, Calendar, NewAppointment, StatusChange};
use medbook::models::history::{self, NewHistoryEntry};
use medbook::schema::appointments as a;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Deserialize)]
struct Change {
    reason: String,
}

async fn update(
    pool: web::Data<DbPool>,
    id: web::Path<i32>,
    change: web::Json<Change>,
) -> Result<HttpResponse, AppError> {
    let (id, reason) = (id.into_inner(), change.into_inner().reason);
    let version = run_blocking(&pool, move |conn| {
        let (current, status): (i32, String) = medbook::on_backend!(conn, |c| a::table
            .find(id)
            .select((a::version, a::status))
            .first(c))?;
        let change = StatusChange {
            id,
            version: current,
            status: &status,
            reason: Some(&reason),
            at: medbook::time::now(),
            actor_id: 1,
            action: "updated",
            from_status: &status,
        };
        Ok(appointment::update_logged(conn, &change)?.map(|a| a.version))
    })
    .await?;
    Ok(match version {
        Some(v) => HttpResponse::Ok().json(json!({ "id": id, "version": v })),
        None => HttpResponse::Conflict().json(json!({ "code": "VERSION_CONFLICT" })),
    })
}

#[derive(Deserialize)]
struct Booking {
    doctor_id: i32,
    patient_id: i32,
    scheduled_at: String,
    #[serde(rename = "type")]
    type_: String,
}

/// `booking.sql`'s transaction: 201 with the new id, or 409 when either calendar is taken.
async fn book(
    pool: web::Data<DbPool>,
    booking: web::Json<Booking>,
) -> Result<HttpResponse, AppError> {
    let Booking {
        doctor_id,
        patient_id,
        scheduled_at,
        type_,
    } = booking.into_inner();
    let start =
        medbook::time::parse(&scheduled_at).map_err(|e| AppError::invalid("scheduled_at", e))?;
    let end = start + chrono::Duration::minutes(30);
    let booked = run_blocking(&pool, move |conn| {
        write_transaction(conn, |conn| {
            lock_users_in_order(conn, &[doctor_id, patient_id])?;
            if appointment::overlaps(conn, Calendar::Doctor(doctor_id), start, end, None)? {
                return Ok(Err("SLOT_TAKEN"));
            }
            if appointment::overlaps(conn, Calendar::Patient(patient_id), start, end, None)? {
                return Ok(Err("PATIENT_BUSY"));
            }
            let now = medbook::time::now();
            let booked = appointment::insert(
                conn,
                &NewAppointment {
                    patient_id,
                    doctor_id,
                    scheduled_at: start,
                    duration_minutes: 30,
                    ends_at: end,
                    type_: &type_,
                    reason: None,
                    status: "pending",
                    version: 1,
                    created_at: now,
                    updated_at: now,
                },
            )?;
            history::append(
                conn,
                &NewHistoryEntry {
                    appointment_id: booked.id,
                    actor_id: patient_id,
                    action: "created",
                    from_status: None,
                    to_status: "pending",
                    version: 1,
                    at: now,
                },
            )?;
            Ok::<_, AppError>(Ok(booked.id))
        })
    })
    .await?;
    Ok(match booked {
        Ok(id) => HttpResponse::Created().json(json!({ "id": id })),
        Err(code) => HttpResponse::Conflict().json(json!({ "code": code })),
    })
}

/// Serves the floor on `listen` until killed; prints `listening on http://ADDR` once bound.
pub fn serve(database_url: &str, listen: &str) -> std::io::Result<()> {
    let mut config = medbook::config::Config::for_database(database_url);
    // The pool medbook would have with the cores this process may use.
    config.pool_size = medbook::config::default_pool_size() as u32;
    let pool = web::Data::new(medbook::db::build_pool(&config, Arc::default()));
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(pool.clone())
                .route("/api/v1/appointments", web::post().to(book))
                .route("/api/v1/appointments/{id}", web::put().to(update))
        })
        .worker_max_blocking_threads(config.blocking_threads())
        .bind(listen)?;
        for addr in server.addrs() {
            println!("listening on http://{addr}");
        }
        server.run().await
    })
}
