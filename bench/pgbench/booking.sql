-- The booking transaction medbook runs (services::booking::book on PostgreSQL), as pgbench
-- runs it directly: lock both users' rows in ascending id order, check both calendars with
-- the same bounded overlap queries, insert the appointment and its first history row.
-- Each pgbench client is one patient (like each medbook-bench client); the doctor and the
-- 30-minute slot within nine years are random (as in medbook-bench: `RANDOM_SLOTS`).
-- The active statuses are binds, as in medbook's statements (`-M prepared` makes every
-- variable one): with them spelled as literals, PostgreSQL could use the exclusion
-- constraints' partial GiST indexes, searched by owner alone, while `appointments` has no
-- statistics yet (a new database, until autovacuum first analyzes it), and read every
-- appointment of the doctor per booking.
-- Variables: doctor_lo, doctor_hi, patient_lo (first patient id), base (epoch seconds),
-- active1..active3 (pending, confirmed, in_progress).
\set doctor random(:doctor_lo, :doctor_hi)
\set patient :patient_lo + :client_id
\set slot random(0, 157679)
\set start :base + :slot * 1800
\set earliest :start - 14400
\set finish :start + 1800
BEGIN;
SELECT id, role, is_active FROM users WHERE id = least(:doctor::integer, :patient::integer) LIMIT 1 FOR NO KEY UPDATE;
SELECT id, role, is_active FROM users WHERE id = greatest(:doctor::integer, :patient::integer) LIMIT 1 FOR NO KEY UPDATE;
SELECT count(*) AS doctor_busy FROM (SELECT id FROM appointments WHERE doctor_id = :doctor AND (status = :active1 OR status = :active2 OR status = :active3) AND scheduled_at > to_timestamp(:earliest::double precision) AT TIME ZONE 'UTC' AND scheduled_at < to_timestamp(:finish::double precision) AT TIME ZONE 'UTC' AND ends_at > to_timestamp(:start::double precision) AT TIME ZONE 'UTC' LIMIT 1) s \gset
SELECT count(*) AS patient_busy FROM (SELECT id FROM appointments WHERE patient_id = :patient AND (status = :active1 OR status = :active2 OR status = :active3) AND scheduled_at > to_timestamp(:earliest::double precision) AT TIME ZONE 'UTC' AND scheduled_at < to_timestamp(:finish::double precision) AT TIME ZONE 'UTC' AND ends_at > to_timestamp(:start::double precision) AT TIME ZONE 'UTC' LIMIT 1) s \gset
\if :doctor_busy + :patient_busy = 0
INSERT INTO appointments (patient_id, doctor_id, scheduled_at, duration_minutes, ends_at, type, reason, status, version, created_at, updated_at) VALUES (:patient, :doctor, to_timestamp(:start::double precision) AT TIME ZONE 'UTC', 30, to_timestamp(:finish::double precision) AT TIME ZONE 'UTC', 'video_consultation', NULL, 'pending', 1, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING id AS appointment_id \gset
INSERT INTO appointment_history (appointment_id, actor_id, action, from_status, to_status, version, at) VALUES (:appointment_id, :patient, 'created', NULL, 'pending', 1, now() AT TIME ZONE 'UTC');
\endif
COMMIT;
