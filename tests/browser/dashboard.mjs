// Browser test of the /admin dashboard in headless Chromium (Debian's, driven by
// playwright-core): sign in, see the numbers, book through the API, see them change, and
// save a screenshot. Then CORS, as a browser enforces it: the server (on 127.0.0.1) allows
// http://localhost:PORT (MEDBOOK_CORS_ORIGINS, set by scripts/browser-test.sh), so a page there
// may call the API, and a page on 127.0.0.1 may not call it as localhost.
//   usage: node tests/browser/dashboard.mjs BASE_URL ADMIN_EMAIL ADMIN_PASSWORD SCREENSHOT
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, adminEmail, adminPassword, screenshot] = process.argv.slice(2);

async function api(path, token, body) {
  const res = await fetch(base + path, {
    method: body ? "POST" : "GET",
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json() };
}

const run = Date.now().toString(36);
const admin = (await api("/api/v1/auth/login", null, { email: adminEmail, password: adminPassword })).body.token;
const doctor = await api("/api/v1/admin/users", admin, {
  name: "Dr Browser", email: `browser-${run}@example.com`, password: "doctor-pass", role: "doctor",
});
assert.equal(doctor.status, 201);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let passed = 0, failed = 0;
async function check(name, fn) {
  try { await fn(); passed++; console.log(`ok - ${name}`); }
  catch (e) { failed++; console.log(`not ok - ${name}\n  ${e.message}`); }
}
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });
  await page.goto(base + "/admin");

  await check("a wrong password is refused on the page", async () => {
    await page.fill("#email", adminEmail);
    await page.fill("#password", "not-the-password");
    await page.click("#sign-in");
    await page.waitForFunction(() => document.getElementById("error").textContent.length > 0);
  });
  await check("the admin signs in and sees the statistics", async () => {
    await page.fill("#password", adminPassword);
    await page.click("#sign-in");
    await page.waitForSelector("#dashboard:not([hidden])");
    await page.waitForFunction(() => document.getElementById("lock-acquisitions").textContent !== "–");
  });
  const before = Number(await page.textContent("#lock-acquisitions"));
  const conflictsBefore = Number((await page.textContent("#conflicts-total")).replace(/,/g, ""));

  // Three bookings of one slot by three patients: one 201, two 409 SLOT_TAKEN.
  const day = new Date(Date.now() + 20 * 86400000); day.setUTCHours(9, 0, 0, 0);
  const statuses = [];
  for (let i = 0; i < 3; i++) {
    const patient = (await api("/api/v1/auth/register", null, {
      name: `Browser ${i}`, email: `browser-${run}-${i}@example.com`, password: "patient-pass",
    })).body.token;
    statuses.push((await api("/api/v1/appointments", patient, {
      doctor_id: doctor.body.id, scheduled_at: day.toISOString(), type: "in_person",
    })).status);
  }
  assert.deepEqual(statuses.sort(), [201, 409, 409]);

  await check("the numbers change after bookings", async () => {
    await page.waitForFunction((n) => Number(document.getElementById("lock-acquisitions").textContent) >= n + 3, before, { timeout: 10000 });
    await page.waitForFunction((n) => Number(document.getElementById("conflicts-total").textContent.replace(/,/g, "")) >= n + 2, conflictsBefore, { timeout: 10000 });
  });
  await check("the contended doctor is listed", async () => {
    await page.waitForFunction((id) => document.getElementById("doctors").textContent.includes(`#${id}`), doctor.body.id, { timeout: 10000 });
  });
  await check("SLOT_TAKEN is in the conflicts table", async () => {
    assert.match(await page.textContent("#conflicts"), /SLOT_TAKEN/);
  });
  await check("the chart is drawn", async () => {
    await page.waitForTimeout(2500);
    const painted = await page.evaluate(() => {
      const c = document.getElementById("chart");
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0; for (let i = 3; i < data.length; i += 4) if (data[i]) n++;
      return n;
    });
    assert.ok(painted > 1000, `only ${painted} pixels drawn`);
  });

  const allowedOrigin = base.replace("127.0.0.1", "localhost");
  await check("a page on an allowed origin calls the API and reads its answers", async () => {
    const app = await browser.newPage();
    await app.goto(allowedOrigin + "/healthz");
    const seen = await app.evaluate(async ({ base, token, id }) => {
      const auth = { Authorization: `Bearer ${token}` };
      const me = await fetch(base + "/api/v1/me", { headers: auth });
      // JSON, If-Match and Authorization make this one preflighted.
      const renamed = await fetch(base + `/api/v1/admin/users/${id}`, {
        method: "PATCH",
        headers: { ...auth, "Content-Type": "application/json", "If-Match": '"1"' },
        body: JSON.stringify({ name: "Dr CORS" }),
      });
      const refused = await fetch(base + "/api/v1/me", { headers: { Authorization: "Bearer nope" } });
      return {
        me: [me.status, me.headers.get("etag"), (await me.json()).role],
        renamed: [renamed.status, renamed.headers.get("etag"), (await renamed.json()).name],
        refused: [refused.status, (await refused.json()).code, refused.headers.get("www-authenticate")],
      };
    }, { base, token: admin, id: doctor.body.id });
    assert.deepEqual(seen, {
      me: [200, '"1"', "admin"],
      renamed: [200, '"2"', "Dr CORS"],
      refused: [401, "UNAUTHENTICATED", "Bearer"],
    });
    await app.close();
  });
  await check("a page on another origin cannot read the API", async () => {
    const other = await browser.newPage();
    await other.goto(base + "/healthz");
    const outcome = await other.evaluate(async (url) => {
      try {
        await fetch(url + "/api/v1/doctors", { headers: { Authorization: "Bearer x" } });
        return "read";
      } catch (e) {
        return e.name;
      }
    }, allowedOrigin);
    assert.equal(outcome, "TypeError");
    await other.close();
  });
  await check("nothing is loaded from outside the server", async () => {
    assert.deepEqual(external, []);
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
