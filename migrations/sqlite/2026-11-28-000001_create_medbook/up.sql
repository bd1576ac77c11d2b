-- medbook schema (SQLite). Same tables as the PostgreSQL set. The constraints are the last line
-- of defence: a doctor's exact slot cannot be taken twice by active appointments, and an
-- appointment cannot get two prescriptions or ratings, whatever the code does.

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('patient', 'doctor', 'admin')),
    specialty TEXT,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE TABLE appointments (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    patient_id INTEGER NOT NULL REFERENCES users (id),
    doctor_id INTEGER NOT NULL REFERENCES users (id),
    scheduled_at TIMESTAMP NOT NULL,
    duration_minutes INTEGER NOT NULL CHECK (duration_minutes BETWEEN 5 AND 240),
    ends_at TIMESTAMP NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('text_consultation', 'video_consultation', 'voice_consultation', 'in_person')),
    reason TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'in_progress', 'completed', 'cancelled', 'rejected')),
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK (patient_id <> doctor_id),
    CHECK (ends_at > scheduled_at)
);
-- SQLite has no exclusion constraints: overlapping slots are kept out by the booking path's
-- write transaction (one writer at a time); the exact slot is also guarded by this index.
CREATE UNIQUE INDEX appointments_doctor_active_slot_key ON appointments (doctor_id, scheduled_at)
    WHERE status IN ('pending', 'confirmed', 'in_progress');
-- Back the bounded overlap checks and the role-scoped lists.
CREATE INDEX appointments_doctor_scheduled_idx ON appointments (doctor_id, scheduled_at);
CREATE INDEX appointments_patient_scheduled_idx ON appointments (patient_id, scheduled_at);
CREATE INDEX appointments_scheduled_idx ON appointments (scheduled_at, id);

CREATE TABLE appointment_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    appointment_id INTEGER NOT NULL REFERENCES appointments (id) ON DELETE CASCADE,
    actor_id INTEGER NOT NULL REFERENCES users (id),
    action TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    version INTEGER NOT NULL,
    at TIMESTAMP NOT NULL,
    -- Exactly one history row per appointment version: no lost or phantom changes.
    UNIQUE (appointment_id, version)
);

CREATE TABLE prescriptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    appointment_id INTEGER NOT NULL UNIQUE REFERENCES appointments (id),
    doctor_id INTEGER NOT NULL REFERENCES users (id),
    patient_id INTEGER NOT NULL REFERENCES users (id),
    medications TEXT NOT NULL,
    notes TEXT,
    acknowledged_at TIMESTAMP,
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    appointment_id INTEGER NOT NULL UNIQUE REFERENCES appointments (id),
    doctor_id INTEGER NOT NULL REFERENCES users (id),
    patient_id INTEGER NOT NULL REFERENCES users (id),
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment TEXT,
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX ratings_doctor_id_idx ON ratings (doctor_id);
