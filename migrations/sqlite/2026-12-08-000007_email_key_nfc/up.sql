-- An email's key (email_key) is now in Unicode's composed normal form (NFC) as well as in
-- lower case: "é" sent as one character and "é" sent as "e" and a combining accent were two
-- addresses, and could be two accounts. The key is computed by medbook, one function for
-- both databases (SQLite has no normalize(), and PostgreSQL's lower() follows the locale),
-- so this migration only lists the users whose key may change: those with an email or a key
-- that is not ASCII (an ASCII key is already in the new form). medbook re-keys them when it
-- starts (services::users::rekey_pending_emails) and removes each from the list; a user
-- whose new key another user already holds stays listed, with a warning at each start.
CREATE TABLE email_keys_pending (
    user_id INTEGER PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE
);
INSERT INTO email_keys_pending (user_id)
SELECT id FROM users
WHERE length(email) <> length(CAST(email AS BLOB))
   OR length(email_key) <> length(CAST(email_key AS BLOB));
