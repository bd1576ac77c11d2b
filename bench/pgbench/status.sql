-- The optimistic update medbook runs for a reason/status change (services::appointments::
-- update): read the row, then in one transaction UPDATE … WHERE id = ? AND version = ? and, if
-- a row changed, append the history row.
-- Variables: appt_lo, appt_hi (the appointment ids to update).
\set id random(:appt_lo, :appt_hi)
SELECT *, version AS current_version FROM appointments WHERE id = :id \gset
BEGIN;
WITH changed AS (UPDATE appointments SET status = status, reason = 'pgbench', version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = :id AND version = :current_version RETURNING *) SELECT count(*) AS updated, coalesce(max(version), 0) AS new_version FROM changed \gset
\if :updated
INSERT INTO appointment_history (appointment_id, actor_id, action, from_status, to_status, version, at) VALUES (:id, 1, 'updated', 'pending', 'pending', :new_version, now() AT TIME ZONE 'UTC');
\endif
COMMIT;
