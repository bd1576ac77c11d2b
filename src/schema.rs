// @generated automatically by Diesel CLI.

diesel::table! {
    api_tokens (id) {
        id -> Int4,
        user_id -> Int4,
        token_hash -> Text,
        created_at -> Timestamp,
        session_epoch -> Int4,
    }
}

diesel::table! {
    appointment_history (id) {
        id -> Int4,
        appointment_id -> Int4,
        actor_id -> Int4,
        action -> Text,
        from_status -> Nullable<Text>,
        to_status -> Text,
        version -> Int4,
        at -> Timestamp,
    }
}

diesel::table! {
    appointments (id) {
        id -> Int4,
        patient_id -> Int4,
        doctor_id -> Int4,
        scheduled_at -> Timestamp,
        duration_minutes -> Int4,
        ends_at -> Timestamp,
        #[sql_name = "type"]
        type_ -> Text,
        reason -> Nullable<Text>,
        status -> Text,
        version -> Int4,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    email_keys_pending (user_id) {
        user_id -> Int4,
    }
}

diesel::table! {
    idempotency_keys (id) {
        id -> Int4,
        user_id -> Int4,
        idempotency_key -> Text,
        fingerprint -> Text,
        state -> Text,
        response_status -> Nullable<Int4>,
        response_headers -> Nullable<Text>,
        response_body -> Nullable<Text>,
        claimed_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    prescriptions (id) {
        id -> Int4,
        appointment_id -> Int4,
        doctor_id -> Int4,
        patient_id -> Int4,
        medications -> Text,
        notes -> Nullable<Text>,
        acknowledged_at -> Nullable<Timestamp>,
        version -> Int4,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    ratings (id) {
        id -> Int4,
        appointment_id -> Int4,
        doctor_id -> Int4,
        patient_id -> Int4,
        score -> Int4,
        comment -> Nullable<Text>,
        version -> Int4,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Int4,
        name -> Text,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        specialty -> Nullable<Text>,
        is_active -> Bool,
        version -> Int4,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        email_key -> Text,
        session_epoch -> Int4,
    }
}

diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(appointment_history -> appointments (appointment_id));
diesel::joinable!(appointment_history -> users (actor_id));
diesel::joinable!(email_keys_pending -> users (user_id));
diesel::joinable!(idempotency_keys -> users (user_id));
diesel::joinable!(prescriptions -> appointments (appointment_id));
diesel::joinable!(ratings -> appointments (appointment_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_tokens,
    appointment_history,
    appointments,
    email_keys_pending,
    idempotency_keys,
    prescriptions,
    ratings,
    users,
);
