DROP TABLE ratings;
DROP TABLE prescriptions;
DROP TABLE appointment_history;
DROP TABLE appointments;
DROP TABLE api_tokens;
DROP TABLE users;
DROP EXTENSION IF EXISTS btree_gist;
