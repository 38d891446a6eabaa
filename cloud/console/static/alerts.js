// Whether the cloud has the alerts API (GET /api/v1/alerts, issue 12): until it does, the console
// hides what depends on it (the overview's firing-alerts tile). The API document (GET
// /api/v1/openapi.json, read once per load) says whether the route exists, so a cloud without it
// is not asked (no 404 every poll); a 404 from it all the same also means no alerts API. Other
// failures are reported.
import { ApiError, api } from './api.js';

let listed = null;

/** Whether the cloud's OpenAPI document has GET /api/v1/alerts (asked once; again after a failure). */
function alertsListed() {
  listed ??= api('openapi.json')
    .then(({ body }) => Boolean(body?.paths?.['/api/v1/alerts']?.get))
    .catch((err) => { listed = null; throw err; });
  return listed;
}

/**
 * GET /api/v1/alerts: `{ available: true, firing, alerts }` on 200, `{ available: false }` when the
 * cloud has no such route (not in its API document, or a 404); throws (ApiError) on other failures.
 */
export async function firingAlerts() {
  if (!(await alertsListed())) return { available: false };
  try {
    const { body } = await api('alerts');
    const alerts = Array.isArray(body?.alerts) ? body.alerts : [];
    return { available: true, alerts, firing: alerts.filter((a) => a.state === 'firing').length };
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return { available: false };
    throw err;
  }
}
