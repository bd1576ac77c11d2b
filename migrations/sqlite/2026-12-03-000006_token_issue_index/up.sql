-- The purge of expired tokens (every 10 minutes when MEDBOOK_TOKEN_TTL_HOURS is set) finds
-- them by created_at. Without this index each purge read the whole table, however few had
-- expired, and on SQLite it read it holding the database's only write lock, so every booking
-- waited for the scan of every live session's token.
CREATE INDEX api_tokens_created_at_idx ON api_tokens (created_at);
