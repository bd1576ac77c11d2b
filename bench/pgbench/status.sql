-- The optimistic update medbook runs for a reason/status change (services::appointments::
-- update, models::appointment::update_logged): read the row, then one statement that does
-- UPDATE … WHERE id = ? AND version = ? and, if it changed the row, appends the history row
-- (atomic by itself: no BEGIN/COMMIT around it), returning the changed row.
-- Variables: appt_lo, appt_hi (the appointment ids to update).
\set id random(:appt_lo, :appt_hi)
SELECT *, version AS current_version FROM appointments WHERE id = :id \gset
WITH changed AS (UPDATE appointments SET status = :status, reason = 'pgbench', version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = :id AND version = :current_version RETURNING id, patient_id, doctor_id, scheduled_at, duration_minutes, ends_at, type, reason, status, version, created_at, updated_at), logged AS (INSERT INTO appointment_history (appointment_id, actor_id, action, from_status, to_status, version, at) SELECT id, 1, 'updated', :status, status, version, now() AT TIME ZONE 'UTC' FROM changed) SELECT * FROM changed;
