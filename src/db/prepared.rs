//! Keeping fixed-shape `UPDATE` statements prepared.
//!
//! Diesel caches a prepared statement only when it can prove the statement's SQL takes a
//! bounded number of shapes, and it never proves that for `UPDATE` (a changeset struct with
//! optional fields can take very many). Every `UPDATE` here sets a fixed tuple of columns, so
//! its SQL is the same on every call: [`FixedShape`] says so, and the statement is then cached
//! by its SQL text like any other. On PostgreSQL that saves a parse and a plan per request on
//! the hottest writes (the optimistic updates), and the round trip of the unnamed statement;
//! on SQLite a `sqlite3_prepare`.
//!
//! Only with the methods that take the statement by value (`get_result`, `load`): diesel's
//! `execute` hands it on by reference, and a reference's `QueryFragment` answers
//! `is_safe_to_cache_prepared` by walking the statement inside, which says no. So a fixed
//! `UPDATE` run for its row count returns a column instead (`.returning(id)`, then
//! `get_result(..).optional()`); `tests/prepared.rs` checks each of them.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::{QueryResult, RunQueryDsl};

/// A statement whose SQL text does not depend on its values. Build it with
/// [`FixedShapeDsl::fixed_shape`]; only for statements without optional parts, and run it
/// with `get_result` or `load`, not `execute` (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct FixedShape<Q>(Q);

/// `.fixed_shape()` on a built statement.
pub trait FixedShapeDsl: Sized {
    /// Marks the statement as safe to keep prepared (see the module documentation).
    fn fixed_shape(self) -> FixedShape<Self> {
        FixedShape(self)
    }
}

impl<Q> FixedShapeDsl for Q {}

impl<Q> QueryId for FixedShape<Q> {
    // No static id: the statement cache keys it by its SQL text (and bind types), which is
    // exactly what makes caching safe even if a caller got the "fixed" wrong.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, DB> QueryFragment<DB> for FixedShape<Q>
where
    Q: QueryFragment<DB>,
    DB: Backend,
{
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q: Query> Query for FixedShape<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, Conn> RunQueryDsl<Conn> for FixedShape<Q> {}
