#!/usr/bin/env python3
"""Seeds a fresh medbook for schemathesis and writes the schemathesis config that points at it.

Without real ids the fuzzer's bookings, reads and updates mostly end in 404 (made-up ids) or
422 (a doctor id that names nobody, a time in the past), so the happy paths and the responses
they return are barely checked. This creates, through the API: a doctor, a patient, a pending
appointment, and a completed one with a prescription and a rating. The config binds the
fuzzer's ids, doctor and patient ids, booking times and expected versions to dictionaries of
those real values (with a probability, so random values are still tried), and the stateful
phase chains the rest from the `Location` headers. The doctor's and the patient's tokens go
to TOKENS_OUT (a `role token` line each), so that the fuzzer can also call as them: as the
admin alone it could not move an appointment along, prescribe, acknowledge or rate.

    usage: fuzz-seed.py BASE_URL ADMIN_TOKEN CONFIG_OUT TOKENS_OUT
"""

import datetime
import json
import sys
import urllib.request

# Strings that have broken services (two of them broke this one: NUL and a leap second were
# 500s on PostgreSQL), tried now and then in the text fields and times of AWKWARD_FIELDS.
AWKWARD = [
    "\u0000", "a\u0000b", "2031-06-30T23:59:60Z", "2031-06-30 23:59:60", "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z", "ÄRZTIN@EXAMPLE.COM", "\u0130", "\u202e", "\U0001d54f", " ", "\\",
    "'; --", "%00", "../", "null", "\ufeff",
]

# The text fields and times they are tried in.
AWKWARD_FIELDS = [
    "body.name", "body.email", "body.specialty", "body.reason", "body.notes", "body.comment",
    "body.medications[*].name", "query.from", "query.to",
]


def toml_array(items):
    """A TOML array of strings or integers (JSON's spelling of them is valid TOML)."""
    return json.dumps(items, ensure_ascii=False)


def call(base, method, path, token=None, body=None):
    request = urllib.request.Request(base + path, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, data) as response:
        return json.loads(response.read() or b"null")


def main():
    base, admin_token, out, tokens_out = sys.argv[1:5]
    api = base + "/api/v1"
    doctor = call(api, "POST", "/admin/users", admin_token, {
        "name": "Fuzz Doctor", "email": "fuzz-doctor@example.com",
        "password": "fuzz-doctor-password", "role": "doctor", "specialty": "general",
    })
    patient = call(api, "POST", "/auth/register", body={
        "name": "Fuzz Patient", "email": "fuzz-patient@example.com",
        "password": "fuzz-patient-password",
    })
    doctor_token = call(api, "POST", "/auth/login", body={
        "email": "fuzz-doctor@example.com", "password": "fuzz-doctor-password",
    })["token"]
    patient_token = patient["token"]

    # Times the fuzzer may book: 30-minute slots from tomorrow on, none taken yet.
    tomorrow = datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=1)
    start = datetime.datetime.combine(tomorrow, datetime.time(8, 0))
    slots = [
        (start + datetime.timedelta(minutes=30 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for k in range(60)
    ]
    slots.insert(0, "2031-06-30T23:59:60Z")  # a leap second: 422, never booked

    def book(at):
        return call(api, "POST", "/appointments", patient_token, {
            "doctor_id": doctor["id"], "scheduled_at": at, "type": "video_consultation",
        })

    pending = book(slots.pop())
    done = book(slots.pop())
    for status in ("confirmed", "in_progress", "completed"):
        done = call(api, "PATCH", f"/appointments/{done['id']}", doctor_token, {"status": status})
    prescription = call(api, "POST", "/prescriptions", doctor_token, {
        "appointment_id": done["id"],
        "medications": [{"name": "Ibuprofen", "dosage": "200 mg", "frequency": "twice a day"}],
    })
    rating = call(api, "POST", "/ratings", patient_token, {
        "appointment_id": done["id"], "score": 5,
    })

    ids = sorted({doctor["id"], patient["user"]["id"], pending["id"], done["id"],
                  prescription["id"], rating["id"]})
    awkward_bindings = "".join(
        f'"{field}" = {{ dictionary = "awkward", probability = 0.2 }}\n' for field in AWKWARD_FIELDS
    )
    config = f"""# Written by scripts/fuzz-seed.py for one fuzz run; see there.
[cache]
directory = "target/fuzz/cache"

[dictionaries.ids]
values = {toml_array(ids)}
[dictionaries.doctors]
values = [{doctor["id"]}]
[dictionaries.patients]
values = [{patient["user"]["id"]}]
[dictionaries.appointments]
values = {toml_array([pending["id"], done["id"]])}
[dictionaries.slots]
values = {toml_array(slots)}
[dictionaries.versions]
values = [1, 2, 3]
[dictionaries.awkward]
values = {toml_array(AWKWARD)}

[parameters]
"path.id" = {{ dictionary = "ids", probability = 0.5 }}
"body.doctor_id" = {{ dictionary = "doctors", probability = 0.7 }}
"body.patient_id" = {{ dictionary = "patients", probability = 0.7 }}
"body.appointment_id" = {{ dictionary = "appointments", probability = 0.7 }}
"body.scheduled_at" = {{ dictionary = "slots", probability = 0.7 }}
"body.version" = {{ dictionary = "versions", probability = 0.7 }}
{awkward_bindings}"""
    with open(out, "w") as f:
        f.write(config)
    with open(tokens_out, "w") as f:
        f.write(f"doctor {doctor_token}\npatient {patient_token}\n")
    print(f"seeded: doctor {doctor['id']}, patient {patient['user']['id']}, appointments "
          f"{pending['id']} and {done['id']}, prescription {prescription['id']}, "
          f"rating {rating['id']}")


if __name__ == "__main__":
    main()
