-- Emails are unique case-insensitively. Until now the unique index was on lower(email), and
-- lower() is not the same function everywhere: SQLite's folds ASCII only (so "Ärzte@x.io"
-- and "ärzte@x.io" could both register there), PostgreSQL's follows the database's locale.
-- Now medbook computes the key itself (the trimmed email in Unicode lower case) and stores
-- it, and a plain unique index on it decides, the same on both databases. Existing rows get
-- lower(email), which is what their uniqueness was decided on.
ALTER TABLE users ADD COLUMN email_key TEXT;
UPDATE users SET email_key = lower(email);
ALTER TABLE users ALTER COLUMN email_key SET NOT NULL;
CREATE UNIQUE INDEX users_email_key_key ON users (email_key);
DROP INDEX users_email_lower_key;
