/** Alerts in the cloud (docs/alerts.md): rules, evaluation on the merged answers, Alertmanager. */
import type { QueryLayer } from '../query/index.js';
import type { CloudServer } from '../server.js';
import { AlertService } from './service.js';

export { AlertService, RESOLVED_KEEP_MS, type RoundResult } from './service.js';
export { compileRule, compileRuleSet, type AlertRule, type CompiledRule } from './rules.js';
export { stepAlert } from './state.js';

/** Register the alert routes and the evaluation loop on `server`; the merged query is `query`'s. */
export function registerAlerts(server: CloudServer, query: QueryLayer): AlertService {
  const alerts = new AlertService(() => query.service);
  server.use(alerts.plugin);
  server.addService(alerts);
  return alerts;
}
