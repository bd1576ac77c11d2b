-- Emails are unique case-insensitively. Until now the unique index was on lower(email), and
-- SQLite's lower() folds ASCII only, so "Ärzte@x.io" and "ärzte@x.io" could both register
-- (PostgreSQL's follows its locale). Now medbook computes the key itself (the trimmed email
-- in Unicode lower case) and stores it, and a plain unique index on it decides, the same on
-- both databases. Existing rows get lower(email), which is what their uniqueness was decided
-- on. (ADD COLUMN … NOT NULL needs a default here; medbook always writes the key.)
ALTER TABLE users ADD COLUMN email_key TEXT NOT NULL DEFAULT '';
UPDATE users SET email_key = lower(email);
CREATE UNIQUE INDEX users_email_key_key ON users (email_key);
DROP INDEX users_email_lower_key;
