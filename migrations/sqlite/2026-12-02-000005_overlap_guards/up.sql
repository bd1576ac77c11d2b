-- What PostgreSQL's exclusion constraints (appointments_doctor_no_overlap,
-- appointments_patient_no_overlap) and its CHECK (ends_at = scheduled_at + duration) do,
-- SQLite does with triggers: no two active appointments of one doctor, or of one patient,
-- overlap, and ends_at is scheduled_at + duration_minutes, whatever writes the row (medbook's
-- booking path checks first, under the write lock; these refuse what a bug or a hand-written
-- statement would let through). Each RAISE names the PostgreSQL constraint it stands for,
-- which is how medbook tells them apart (db::errors::classify_unknown).
--
-- The overlaps are two views, written once for both triggers (and for an operator's audit:
-- `SELECT * FROM appointments_doctor_overlaps` lists the active appointments that overlap
-- another of their doctor's). Asked for one id, each is a primary-key lookup and a short range
-- of the (doctor_id | patient_id, scheduled_at) index, bounded below by start - 241 minutes as
-- the booking path's check is by start - 240 (no appointment is longer, and the triggers check
-- ends_at first), however long the calendar is. Times are stored as
-- 'YYYY-MM-DD HH:MM:SS[.ffffff]' text, which sorts as the time does.
-- Statuses are compared with OR, not IN: SQLite builds a temporary b-tree for an IN list on
-- every run of a trigger (BENCHMARKS.md: +66 000 instructions per booking with IN).

CREATE VIEW appointments_doctor_overlaps (id, other_id) AS
SELECT n.id, a.id
FROM appointments AS n
JOIN appointments AS a
  ON a.doctor_id = n.doctor_id
 AND a.scheduled_at > datetime(n.scheduled_at, '-241 minutes')
 AND a.scheduled_at < n.ends_at
 AND a.ends_at > n.scheduled_at
 AND a.id <> n.id
 AND (a.status = 'pending' OR a.status = 'confirmed' OR a.status = 'in_progress')
WHERE n.status = 'pending' OR n.status = 'confirmed' OR n.status = 'in_progress';

CREATE VIEW appointments_patient_overlaps (id, other_id) AS
SELECT n.id, a.id
FROM appointments AS n
JOIN appointments AS a
  ON a.patient_id = n.patient_id
 AND a.scheduled_at > datetime(n.scheduled_at, '-241 minutes')
 AND a.scheduled_at < n.ends_at
 AND a.ends_at > n.scheduled_at
 AND a.id <> n.id
 AND (a.status = 'pending' OR a.status = 'confirmed' OR a.status = 'in_progress')
WHERE n.status = 'pending' OR n.status = 'confirmed' OR n.status = 'in_progress';

-- After the row is written, so that the views see it; a RAISE undoes the statement.
-- (A time that is not a time makes the ends_at difference NULL: refused too.)
CREATE TRIGGER appointments_guard_insert
AFTER INSERT ON appointments
BEGIN
    SELECT RAISE(ABORT, 'appointments_ends_at_check')
    WHERE NOT coalesce(abs((julianday(NEW.ends_at) - julianday(NEW.scheduled_at)) * 1440.0
                           - NEW.duration_minutes) <= 0.001, 0);
    SELECT RAISE(ABORT, 'appointments_doctor_no_overlap')
    WHERE EXISTS (SELECT 1 FROM appointments_doctor_overlaps WHERE id = NEW.id);
    SELECT RAISE(ABORT, 'appointments_patient_no_overlap')
    WHERE EXISTS (SELECT 1 FROM appointments_patient_overlaps WHERE id = NEW.id);
END;

-- An update is checked when it changes the interval, moves the row to another doctor or
-- patient, or makes it active again; a status change between active states, a reason, a
-- cancellation pass unchecked.
CREATE TRIGGER appointments_guard_update
AFTER UPDATE OF scheduled_at, ends_at, duration_minutes, doctor_id, patient_id, status
ON appointments
WHEN NEW.scheduled_at IS NOT OLD.scheduled_at
  OR NEW.ends_at IS NOT OLD.ends_at
  OR NEW.duration_minutes IS NOT OLD.duration_minutes
  OR NEW.doctor_id IS NOT OLD.doctor_id
  OR NEW.patient_id IS NOT OLD.patient_id
  OR ((NEW.status = 'pending' OR NEW.status = 'confirmed' OR NEW.status = 'in_progress')
      AND NOT (OLD.status = 'pending' OR OLD.status = 'confirmed' OR OLD.status = 'in_progress'))
BEGIN
    SELECT RAISE(ABORT, 'appointments_ends_at_check')
    WHERE NOT coalesce(abs((julianday(NEW.ends_at) - julianday(NEW.scheduled_at)) * 1440.0
                           - NEW.duration_minutes) <= 0.001, 0);
    SELECT RAISE(ABORT, 'appointments_doctor_no_overlap')
    WHERE EXISTS (SELECT 1 FROM appointments_doctor_overlaps WHERE id = NEW.id);
    SELECT RAISE(ABORT, 'appointments_patient_no_overlap')
    WHERE EXISTS (SELECT 1 FROM appointments_patient_overlaps WHERE id = NEW.id);
END;
