-- A deactivation ends the user's sessions for good. Until now a deactivated user's tokens
-- were refused only while the user stayed inactive, and came back to life on reactivation.
-- A token is now valid only while its session_epoch equals its user's; deactivating a user
-- moves the user's epoch on, so every token issued before, including one a login was issuing
-- at that very moment, stays dead. (Deleting the tokens alone would not do: a login that had
-- read the user as active could insert its token after the delete.) The tokens deactivated
-- users hold today are deleted, so reactivating them asks for a new login too.
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
DELETE FROM api_tokens WHERE user_id IN (SELECT id FROM users WHERE NOT is_active);
