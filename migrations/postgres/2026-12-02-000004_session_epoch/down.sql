ALTER TABLE api_tokens DROP COLUMN session_epoch;
ALTER TABLE users DROP COLUMN session_epoch;
