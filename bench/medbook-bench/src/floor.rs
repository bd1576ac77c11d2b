//! `floor-server`: the least an HTTP service built like medbook (actix-web, medbook's r2d2
//! pool and `run_blocking`, diesel on the concrete connection) can do for the `status`
//! scenario. `PUT /api/v1/appointments/{id}` runs exactly `bench/pgbench/status.sql` — read
//! the version; BEGIN; UPDATE … WHERE id = ? AND version = ?; the history row; COMMIT — with
//! no authentication, no validation, no metrics and a two-field JSON answer.
//!
//! Not a service (anyone may change any appointment): `bench/run.sh` measures it beside
//! medbook and pgbench, so that the table shows how much of the distance to pgbench is the
//! stack's and how much is medbook's own work.

use actix_web::{web, App, HttpResponse, HttpServer};
use diesel::prelude::*;
use medbook::db::{run_blocking, DbPool, FixedShapeDsl};
use medbook::error::AppError;
use medbook::schema::{appointment_history as h, appointments as a};
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
        Ok(medbook::on_backend!(conn, |c| {
            let current: i32 = a::table.find(id).select(a::version).first(c)?;
            c.transaction(|c| {
                let now = medbook::time::now();
                let changed: Option<i32> =
                    diesel::update(a::table.filter(a::id.eq(id)).filter(a::version.eq(current)))
                        .set((
                            a::reason.eq(&reason),
                            a::version.eq(a::version + 1),
                            a::updated_at.eq(now),
                        ))
                        .returning(a::version)
                        .fixed_shape() // kept prepared, as medbook's updates are
                        .get_result(c)
                        .optional()?;
                if let Some(v) = changed {
                    diesel::insert_into(h::table)
                        .values((
                            h::appointment_id.eq(id),
                            h::actor_id.eq(1),
                            h::action.eq("updated"),
                            h::from_status.eq("pending"),
                            h::to_status.eq("pending"),
                            h::version.eq(v),
                            h::at.eq(now),
                        ))
                        .execute(c)?;
                }
                diesel::QueryResult::Ok(changed)
            })
        }?))
    })
    .await?;
    Ok(match version {
        Some(v) => HttpResponse::Ok().json(json!({ "id": id, "version": v })),
        None => HttpResponse::Conflict().json(json!({ "code": "VERSION_CONFLICT" })),
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
