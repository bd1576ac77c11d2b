-- What PostgreSQL's exclusion constraints (appointments_doctor_no_overlap,
-- appointments_patient_no_overlap) and its CHECK (ends_at = scheduled_at + duration) do,
-- SQLite does with triggers: no two active appointments of one doctor, or of one patient,
-- overlap, and ends_at is scheduled_at + duration_minutes, whatever writes the row (medbook's
-- booking path checks first, under the write lock; these refuse what a bug or a hand-written
-- statement would let through). Each RAISE names the PostgreSQL constraint it stands for,
-- which is how medbook tells them apart (db::errors::classify_unknown).
--
-- The overlap lookups are bounded below by start - 241 minutes, as the booking path's are by
-- start - 240 (no appointment is longer, and ends_at is checked first), so each is a short
-- range of the (doctor_id | patient_id, scheduled_at) index however long the calendar is.
-- Times are stored as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text, which sorts as the time does.
-- Statuses are compared with OR, not IN: SQLite builds a temporary b-tree for an IN list on
-- every run of a trigger. With IN the triggers added ~66 000 instructions to a booking, with
-- OR ~21 000 (+5 %; callgrind, BENCHMARKS.md), and no difference in requests/s.

CREATE TRIGGER appointments_guard_insert
BEFORE INSERT ON appointments
BEGIN
    -- (A time that is not a time makes the difference NULL: refused too.)
    SELECT RAISE(ABORT, 'appointments_ends_at_check')
    WHERE NOT coalesce(abs((julianday(NEW.ends_at) - julianday(NEW.scheduled_at)) * 1440.0
                           - NEW.duration_minutes) <= 0.001, 0);
    SELECT RAISE(ABORT, 'appointments_doctor_no_overlap')
    WHERE (NEW.status = 'pending' OR NEW.status = 'confirmed' OR NEW.status = 'in_progress')
      AND EXISTS (
        SELECT 1 FROM appointments AS a
        WHERE a.doctor_id = NEW.doctor_id
          AND a.scheduled_at > datetime(NEW.scheduled_at, '-241 minutes')
          AND a.scheduled_at < NEW.ends_at
          AND a.ends_at > NEW.scheduled_at
          AND (a.status = 'pending' OR a.status = 'confirmed' OR a.status = 'in_progress'));
    SELECT RAISE(ABORT, 'appointments_patient_no_overlap')
    WHERE (NEW.status = 'pending' OR NEW.status = 'confirmed' OR NEW.status = 'in_progress')
      AND EXISTS (
        SELECT 1 FROM appointments AS a
        WHERE a.patient_id = NEW.patient_id
          AND a.scheduled_at > datetime(NEW.scheduled_at, '-241 minutes')
          AND a.scheduled_at < NEW.ends_at
          AND a.ends_at > NEW.scheduled_at
          AND (a.status = 'pending' OR a.status = 'confirmed' OR a.status = 'in_progress'));
END;

-- An update is checked when it changes the interval, moves the row to another doctor or
-- patient, or makes it active again; a status change between active states, a reason, a
-- cancellation pass through untouched.
CREATE TRIGGER appointments_guard_update
BEFORE UPDATE OF scheduled_at, ends_at, duration_minutes, doctor_id, patient_id, status
ON appointments
WHEN NEW.scheduled_at IS NOT OLD.scheduled_at
  OR NEW.ends_at IS NOT OLD.ends_at
  OR NEW.duration_minutes IS NOT OLD.duration_minutes
  OR NEW.doctor_id IS NOT OLD.doctor_id
  OR NEW.patient_id IS NOT OLD.patient_id
  OR ((NEW.status = 'pending' OR NEW.status = 'confirmed' OR NEW.status = 'in_progress')
      AND NOT (OLD.status = 'pending' OR OLD.status = 'confirmed' OR OLD.status = 'in_progress'))
BEGIN
    -- (A time that is not a time makes the difference NULL: refused too.)
    SELECT RAISE(ABORT, 'appointments_ends_at_check')
    WHERE NOT coalesce(abs((julianday(NEW.ends_at) - julianday(NEW.scheduled_at)) * 1440.0
                           - NEW.duration_minutes) <= 0.001, 0);
    SELECT RAISE(ABORT, 'appointments_doctor_no_overlap')
    WHERE (NEW.status = 'pending' OR NEW.status = 'confirmed' OR NEW.status = 'in_progress')
      AND EXISTS (
        SELECT 1 FROM appointments AS a
        WHERE a.doctor_id = NEW.doctor_id
          AND a.scheduled_at > datetime(NEW.scheduled_at, '-241 minutes')
          AND a.scheduled_at < NEW.ends_at
          AND a.ends_at > NEW.scheduled_at
          AND (a.status = 'pending' OR a.status = 'confirmed' OR a.status = 'in_progress')
          AND a.id <> NEW.id);
    SELECT RAISE(ABORT, 'appointments_patient_no_overlap')
    WHERE (NEW.status = 'pending' OR NEW.status = 'confirmed' OR NEW.status = 'in_progress')
      AND EXISTS (
        SELECT 1 FROM appointments AS a
        WHERE a.patient_id = NEW.patient_id
          AND a.scheduled_at > datetime(NEW.scheduled_at, '-241 minutes')
          AND a.scheduled_at < NEW.ends_at
          AND a.ends_at > NEW.scheduled_at
          AND (a.status = 'pending' OR a.status = 'confirmed' OR a.status = 'in_progress')
          AND a.id <> NEW.id);
END;
