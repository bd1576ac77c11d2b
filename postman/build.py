#!/usr/bin/env python3
"""Builds medbook.postman_collection.json (Postman v2.1) from the request list below.

The committed JSON is what users import; CI checks it matches this script
(`python3 postman/build.py --check`). Edit here, then run `python3 postman/build.py`.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
JSON = {"key": "Content-Type", "value": "application/json"}
NUMERIC = ["doctorId", "doctor2Id", "appointmentId", "patientId"]


def request(name, method, path, body=None, token=None, tests=(), pre=(), headers=()):
    hdrs = [JSON] if body is not None else []
    if token:
        hdrs.append({"key": "Authorization", "value": "Bearer {{" + token + "}}"})
    hdrs.extend({"key": k, "value": v} for k, v in headers)
    req = {
        "method": method,
        "header": hdrs,
        "url": {
            "raw": "{{baseUrl}}" + path,
            "host": ["{{baseUrl}}"],
            "path": [p for p in path.split("?")[0].split("/") if p],
        },
    }
    if "?" in path:
        req["url"]["query"] = [
            {"key": kv.split("=")[0], "value": kv.split("=", 1)[1]} for kv in path.split("?", 1)[1].split("&")
        ]
    if body is not None:
        raw = body if isinstance(body, str) else json.dumps(body, indent=2)
        for var in NUMERIC:  # ids go in as JSON numbers, not strings
            raw = raw.replace('"{{' + var + '}}"', "{{" + var + "}}")
        req["body"] = {"mode": "raw", "raw": raw, "options": {"raw": {"language": "json"}}}
    events = []
    if pre:
        events.append({"listen": "prerequest", "script": {"type": "text/javascript", "exec": list(pre)}})
    if tests:
        events.append({"listen": "test", "script": {"type": "text/javascript", "exec": list(tests)}})
    item = {"name": name, "request": req}
    if events:
        item["event"] = events
    return item


def status(code):
    return [f'pm.test("status {code}", () => pm.response.to.have.status({code}));']


def error(code, status_code):
    return status(status_code) + [
        f'pm.test("code {code}", () => pm.expect(pm.response.json().code).to.eql("{code}"));',
        'pm.test("error body has a message", () => pm.expect(pm.response.json().error).to.be.a("string"));',
    ]


def save(var, expr):
    return [f'pm.collectionVariables.set("{var}", {expr});']


auth = [
    request("Log in as the bootstrap admin", "POST", "/api/v1/auth/login",
            {"email": "{{adminEmail}}", "password": "{{adminPassword}}"},
            pre=['pm.collectionVariables.set("runId", Date.now().toString(36));'],
            tests=status(200) + save("adminToken", "pm.response.json().token") +
            ['pm.test("admin role", () => pm.expect(pm.response.json().user.role).to.eql("admin"));']),
    request("Register a patient", "POST", "/api/v1/auth/register",
            {"name": "Ann Patient", "email": "ann-{{runId}}@example.com", "password": "patient-pass"},
            tests=status(201) + save("patientToken", "pm.response.json().token") +
            save("patientId", "pm.response.json().user.id") + [
                'pm.test("a patient, version 1", () => { const u = pm.response.json().user; '
                'pm.expect(u.role).to.eql("patient"); pm.expect(u.version).to.eql(1); });',
                'pm.test("no password hash", () => pm.expect(pm.response.json().user).to.not.have.property("password_hash"));',
            ]),
    request("Register a second patient", "POST", "/api/v1/auth/register",
            {"name": "Bob Patient", "email": "bob-{{runId}}@example.com", "password": "patient-pass"},
            tests=status(201) + save("patient2Token", "pm.response.json().token")),
    request("Register the same email in other case → 409 EMAIL_TAKEN", "POST", "/api/v1/auth/register",
            {"name": "Ann Again", "email": "ANN-{{runId}}@example.com", "password": "patient-pass"},
            tests=error("EMAIL_TAKEN", 409)),
    request("Register with a short password → 422", "POST", "/api/v1/auth/register",
            {"name": "Short", "email": "short-{{runId}}@example.com", "password": "short"},
            tests=error("VALIDATION_FAILED", 422) +
            ['pm.test("details name the field", () => pm.expect(pm.response.json().details).to.have.property("password"));']),
    request("Log in with a wrong password → 401", "POST", "/api/v1/auth/login",
            {"email": "ann-{{runId}}@example.com", "password": "wrong-password"},
            tests=error("UNAUTHENTICATED", 401)),
    request("Who am I", "GET", "/api/v1/me", token="patientToken",
            tests=status(200) + ['pm.test("ETag", () => pm.response.to.have.header("ETag"));',
                                 'pm.test("never cached", () => pm.expect(pm.response.headers.get("Cache-Control")).to.eql("no-store"));']),
    request("Who am I, with the ETag I have → 304", "GET", "/api/v1/me", token="patientToken",
            headers=[("If-None-Match", '"1"')],
            tests=status(304) + ['pm.test("ETag \\"1\\"", () => pm.expect(pm.response.headers.get("ETag")).to.eql(\'"1"\'));']),
    request("No token → 401", "GET", "/api/v1/me", tests=error("UNAUTHENTICATED", 401) +
            ['pm.test("WWW-Authenticate", () => pm.expect(pm.response.headers.get("WWW-Authenticate")).to.eql("Bearer"));']),
]

admin = [
    request("Create a doctor", "POST", "/api/v1/admin/users",
            {"name": "Dr Grey", "email": "grey-{{runId}}@example.com", "password": "doctor-pass",
             "role": "doctor", "specialty": "general"}, token="adminToken",
            tests=status(201) + save("doctorId", "pm.response.json().id") +
            ['pm.test("a doctor with a specialty", () => pm.expect(pm.response.json().specialty).to.eql("general"));']),
    request("Log in as the doctor", "POST", "/api/v1/auth/login",
            {"email": "grey-{{runId}}@example.com", "password": "doctor-pass"},
            tests=status(200) + save("doctorToken", "pm.response.json().token")),
    request("Create a second doctor", "POST", "/api/v1/admin/users",
            {"name": "Dr Ross", "email": "ross-{{runId}}@example.com", "password": "doctor-pass", "role": "doctor"},
            token="adminToken", tests=status(201) + save("doctor2Id", "pm.response.json().id")),
    request("Patch with a stale If-Match → 412", "PATCH", "/api/v1/admin/users/{{doctor2Id}}",
            {"name": "Dr Ross II"}, token="adminToken", headers=[("If-Match", '"99"')],
            tests=error("PRECONDITION_FAILED", 412)),
    request("A patient may not create users → 403", "POST", "/api/v1/admin/users",
            {"name": "Eve", "email": "eve-{{runId}}@example.com", "password": "patient-pass", "role": "admin"},
            token="patientToken", tests=error("FORBIDDEN", 403)),
]

doctors = [
    request("List doctors", "GET", "/api/v1/doctors", token="patientToken",
            tests=status(200) + ['pm.test("the new doctor is listed", () => pm.expect('
                                 'pm.response.json().items.map(d => d.id)).to.include(pm.collectionVariables.get("doctorId")));']),
    request("Get a doctor", "GET", "/api/v1/doctors/{{doctorId}}", token="patientToken",
            tests=status(200) + ['pm.test("no ratings yet", () => pm.expect(pm.response.json().rating_count).to.eql(0));']),
    request("Busy intervals", "GET", "/api/v1/doctors/{{doctorId}}/busy", token="patientToken",
            tests=status(200) + ['pm.test("items", () => pm.expect(pm.response.json().items).to.be.an("array"));']),
]

slot_script = [
    "const day = new Date(Date.now() + 30 * 86400000);",
    "day.setUTCHours(10, 0, 0, 0);",
    'pm.collectionVariables.set("slotAt", day.toISOString().replace(".000Z", "Z"));',
    "const overlap = new Date(day.getTime() + 15 * 60000);",
    'pm.collectionVariables.set("overlapAt", overlap.toISOString().replace(".000Z", "Z"));',
    "const later = new Date(day.getTime() + 3 * 3600000);",
    'pm.collectionVariables.set("laterAt", later.toISOString().replace(".000Z", "Z"));',
]

booking = [
    request("Book a slot", "POST", "/api/v1/appointments",
            {"doctor_id": "{{doctorId}}", "scheduled_at": "{{slotAt}}", "type": "video_consultation",
             "reason": "checkup"}, token="patientToken", pre=slot_script,
            tests=status(201) + save("appointmentId", "pm.response.json().id") + [
                'pm.test("pending, version 1", () => { const a = pm.response.json(); '
                'pm.expect(a.status).to.eql("pending"); pm.expect(a.version).to.eql(1); });',
                'pm.test("ETag \\"1\\"", () => pm.expect(pm.response.headers.get("ETag")).to.eql(\'"1"\'));',
                'pm.test("Location", () => pm.response.to.have.header("Location"));',
                'pm.test("UTC with Z", () => pm.expect(pm.response.json().scheduled_at).to.eql(pm.collectionVariables.get("slotAt")));',
            ]),
    request("Race story 1: book the taken slot again → 409 SLOT_TAKEN", "POST", "/api/v1/appointments",
            {"doctor_id": "{{doctorId}}", "scheduled_at": "{{overlapAt}}", "type": "in_person"},
            token="patient2Token", tests=error("SLOT_TAKEN", 409) + [
                'pm.test("says why", () => pm.expect(pm.response.json().error).to.include("Doctor already has appointment at this time"));']),
    request("The same patient elsewhere at that time → 409 PATIENT_BUSY", "POST", "/api/v1/appointments",
            {"doctor_id": "{{doctor2Id}}", "scheduled_at": "{{overlapAt}}", "type": "in_person"},
            token="patientToken", tests=error("PATIENT_BUSY", 409)),
    request("Book in the past → 422", "POST", "/api/v1/appointments",
            {"doctor_id": "{{doctorId}}", "scheduled_at": "2001-01-01T10:00:00Z", "type": "in_person"},
            token="patient2Token", tests=error("VALIDATION_FAILED", 422)),
    request("Book an unknown doctor → 404", "POST", "/api/v1/appointments",
            {"doctor_id": 99999999, "scheduled_at": "{{laterAt}}", "type": "in_person"},
            token="patient2Token", tests=error("NOT_FOUND", 404)),
    request("Malformed JSON → 400", "POST", "/api/v1/appointments", '{"doctor_id": ',
            token="patient2Token", tests=error("BAD_REQUEST", 400)),
    request("My appointments", "GET", "/api/v1/appointments?limit=10", token="patientToken",
            tests=status(200) + ['pm.test("one appointment", () => pm.expect(pm.response.json().items.length).to.eql(1));']),
    request("Another patient's appointment → 404", "GET", "/api/v1/appointments/{{appointmentId}}",
            token="patient2Token", tests=error("NOT_FOUND", 404)),
    request("A method the path does not have → 405 with Allow", "DELETE", "/api/v1/appointments/{{appointmentId}}",
            token="patientToken", tests=error("METHOD_NOT_ALLOWED", 405) + [
                'pm.test("Allow lists the path\'s methods", () => pm.response.to.have.header("Allow", "GET, HEAD, PUT, PATCH"));']),
]

lifecycle = [
    request("A patient may not confirm → 403", "PUT", "/api/v1/appointments/{{appointmentId}}",
            {"status": "confirmed"}, token="patientToken", tests=error("FORBIDDEN", 403)),
    request("The doctor confirms (version 1)", "PUT", "/api/v1/appointments/{{appointmentId}}",
            {"status": "confirmed", "version": 1}, token="doctorToken",
            tests=status(200) + ['pm.test("version 2", () => pm.expect(pm.response.json().version).to.eql(2));']),
    request("A cancel based on version 1 → 409 VERSION_CONFLICT", "PUT", "/api/v1/appointments/{{appointmentId}}",
            {"status": "cancelled", "version": 1}, token="patientToken",
            tests=error("VERSION_CONFLICT", 409) + [
                'pm.test("current is sent", () => pm.expect(pm.response.json().current.status).to.eql("confirmed"));']),
    request("A stale If-Match → 412", "PUT", "/api/v1/appointments/{{appointmentId}}",
            {"status": "in_progress"}, token="doctorToken", headers=[("If-Match", '"1"')],
            tests=error("PRECONDITION_FAILED", 412)),
    request("Start the consultation", "PUT", "/api/v1/appointments/{{appointmentId}}",
            {"status": "in_progress"}, token="doctorToken", headers=[("If-Match", '"2"')],
            tests=status(200)),
    request("Complete it", "PATCH", "/api/v1/appointments/{{appointmentId}}",
            {"status": "completed"}, token="doctorToken",
            tests=status(200) + ['pm.test("completed", () => pm.expect(pm.response.json().status).to.eql("completed"));']),
    request("Race story 2: completed → confirmed → 422", "PUT", "/api/v1/appointments/{{appointmentId}}",
            {"status": "confirmed"}, token="doctorToken",
            tests=error("INVALID_TRANSITION", 422) + [
                'pm.test("says why", () => pm.expect(pm.response.json().error).to.include("Invalid status transition"));']),
    request("History", "GET", "/api/v1/appointments/{{appointmentId}}/history", token="patientToken",
            tests=status(200) + ['pm.test("four changes", () => pm.expect(pm.response.json().items.map(h => h.to_status))'
                                 '.to.eql(["pending", "confirmed", "in_progress", "completed"]));']),
]

prescriptions = [
    request("Prescribe", "POST", "/api/v1/prescriptions",
            {"appointment_id": "{{appointmentId}}", "notes": "with food",
             "medications": [{"name": "Amoxicillin", "dosage": "500 mg", "frequency": "3x daily", "duration_days": 7}]},
            token="doctorToken", tests=status(201) + save("prescriptionId", "pm.response.json().id")),
    request("Race story 3: prescribe again → 409 PRESCRIPTION_EXISTS", "POST", "/api/v1/prescriptions",
            {"appointment_id": "{{appointmentId}}",
             "medications": [{"name": "Ibuprofen", "dosage": "200 mg", "frequency": "daily"}]},
            token="doctorToken", tests=error("PRESCRIPTION_EXISTS", 409)),
    request("The appointment's prescription", "GET", "/api/v1/appointments/{{appointmentId}}/prescription",
            token="patientToken", tests=status(200)),
    request("Change the notes", "PUT", "/api/v1/prescriptions/{{prescriptionId}}",
            {"notes": "after food", "version": 1}, token="doctorToken",
            tests=status(200) + ['pm.test("version 2", () => pm.expect(pm.response.json().version).to.eql(2));']),
    request("The patient acknowledges", "POST", "/api/v1/prescriptions/{{prescriptionId}}/acknowledge", {},
            token="patientToken", tests=status(200) +
            ['pm.test("acknowledged_at set", () => pm.expect(pm.response.json().acknowledged_at).to.be.a("string"));']),
    request("Acknowledge again → 409", "POST", "/api/v1/prescriptions/{{prescriptionId}}/acknowledge", {},
            token="patientToken", tests=error("ALREADY_ACKNOWLEDGED", 409)),
    request("Edit after acknowledgment → 409", "PUT", "/api/v1/prescriptions/{{prescriptionId}}",
            {"notes": "too late"}, token="doctorToken", tests=error("ALREADY_ACKNOWLEDGED", 409)),
]

ratings = [
    request("Rate the appointment", "POST", "/api/v1/ratings",
            {"appointment_id": "{{appointmentId}}", "score": 4, "comment": "kind"}, token="patientToken",
            tests=status(201) + save("ratingId", "pm.response.json().id")),
    request("Rate again → 409 RATING_EXISTS", "POST", "/api/v1/ratings",
            {"appointment_id": "{{appointmentId}}", "score": 1}, token="patientToken",
            tests=error("RATING_EXISTS", 409)),
    request("Change the score", "PUT", "/api/v1/ratings/{{ratingId}}", {"score": 5, "version": 1},
            token="patientToken", tests=status(200)),
    request("Clear the comment with null (the score stays)", "PUT", "/api/v1/ratings/{{ratingId}}",
            {"comment": None, "version": 2}, token="patientToken",
            tests=status(200) + ['pm.test("comment cleared, score kept", () => { const r = pm.response.json(); '
                                 'pm.expect(r.comment).to.eql(null); pm.expect(r.score).to.eql(5); '
                                 'pm.expect(r.version).to.eql(3); });']),
    request("The doctor's average", "GET", "/api/v1/doctors/{{doctorId}}", token="patientToken",
            tests=status(200) + ['pm.test("one rating of 5", () => { const d = pm.response.json(); '
                                 'pm.expect(d.rating_count).to.eql(1); pm.expect(d.rating_avg).to.eql(5); });']),
]

deactivation = [
    request("Deactivate the doctor", "PATCH", "/api/v1/admin/users/{{doctorId}}", {"is_active": False},
            token="adminToken", tests=status(200) +
            ['pm.test("inactive", () => pm.expect(pm.response.json().is_active).to.eql(false));']),
    request("Book the inactive doctor → 409 DOCTOR_INACTIVE", "POST", "/api/v1/appointments",
            {"doctor_id": "{{doctorId}}", "scheduled_at": "{{laterAt}}", "type": "in_person"},
            token="patient2Token", tests=error("DOCTOR_INACTIVE", 409)),
    request("The inactive doctor's token → 401", "GET", "/api/v1/me", token="doctorToken",
            tests=error("UNAUTHENTICATED", 401)),
    request("Reactivate the doctor", "PATCH", "/api/v1/admin/users/{{doctorId}}", {"is_active": True},
            token="adminToken", tests=status(200) +
            ['pm.test("active", () => pm.expect(pm.response.json().is_active).to.eql(true));']),
    request("The token from before the deactivation stays dead → 401", "GET", "/api/v1/me",
            token="doctorToken", tests=error("UNAUTHENTICATED", 401)),
    request("The reactivated doctor logs in again", "POST", "/api/v1/auth/login",
            {"email": "grey-{{runId}}@example.com", "password": "doctor-pass"},
            tests=status(200) + save("doctorToken", "pm.response.json().token")),
    request("The new token works", "GET", "/api/v1/me", token="doctorToken", tests=status(200)),
    request("Log out", "POST", "/api/v1/auth/logout", token="patient2Token", tests=status(204)),
    request("The revoked token → 401", "GET", "/api/v1/me", token="patient2Token",
            tests=error("UNAUTHENTICATED", 401)),
]

operations = [
    request("Lock statistics (admin)", "GET", "/api/v1/admin/lock-stats", token="adminToken",
            tests=status(200) + [
                'pm.test("bookings took locks", () => pm.expect(pm.response.json().lock_acquisitions).to.be.at.least(2));',
                'pm.test("the taken slot was counted", () => pm.expect(pm.response.json().conflicts.SLOT_TAKEN).to.be.at.least(1));',
            ]),
    request("Lock statistics are admin only → 403", "GET", "/api/v1/admin/lock-stats", token="patientToken",
            tests=error("FORBIDDEN", 403)),
    request("Prometheus metrics", "GET", "/metrics",
            tests=status(200) + ['pm.test("lock counters", () => pm.expect(pm.response.text()).to.include("medbook_lock_acquisitions_total"));']),
    request("Liveness", "GET", "/healthz", tests=status(200)),
    request("Readiness", "GET", "/readyz", tests=status(200)),
    request("OpenAPI document", "GET", "/api/v1/openapi.json",
            tests=status(200) + ['pm.test("OpenAPI 3.1", () => pm.expect(pm.response.json().openapi).to.match(/^3\\.1/));']),
]

collection = {
    "info": {
        "name": "medbook",
        "description": "medbook API, run top to bottom against a fresh server started with "
                       "MEDBOOK_ADMIN_EMAIL/MEDBOOK_ADMIN_PASSWORD matching the environment. "
                       "Set baseUrl (default http://127.0.0.1:8080).",
        "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
    },
    "item": [
        {"name": "auth", "item": auth},
        {"name": "admin", "item": admin},
        {"name": "doctors", "item": doctors},
        {"name": "booking", "item": booking},
        {"name": "lifecycle", "item": lifecycle},
        {"name": "prescriptions", "item": prescriptions},
        {"name": "ratings", "item": ratings},
        {"name": "admin: deactivation", "item": deactivation},
        {"name": "operations", "item": operations},
    ],
    "variable": [{"key": k, "value": ""} for k in [
        "runId", "adminToken", "patientToken", "patient2Token", "patientId", "doctorId", "doctorToken",
        "doctor2Id", "slotAt", "overlapAt", "laterAt", "appointmentId", "prescriptionId", "ratingId"]],
}

environment = {
    "name": "medbook local",
    "values": [
        {"key": "baseUrl", "value": "http://127.0.0.1:8080", "enabled": True},
        {"key": "adminEmail", "value": "admin@medbook.local", "enabled": True},
        {"key": "adminPassword", "value": "admin-password", "enabled": True},
    ],
}

outputs = {
    HERE / "medbook.postman_collection.json": json.dumps(collection, indent=2) + "\n",
    HERE / "medbook.postman_environment.json": json.dumps(environment, indent=2) + "\n",
}

if "--check" in sys.argv:
    stale = [p.name for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if stale:
        sys.exit(f"out of date, run python3 postman/build.py: {', '.join(stale)}")
    print("postman collection is up to date")
else:
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")
