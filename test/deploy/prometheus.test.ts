/**
 * deploy/prometheus/alerts.yml: Prometheus accepts it (`promtool check rules`), every alert fires
 * on the series its unit test feeds it (`promtool test rules deploy/prometheus/alerts.test.yml`,
 * real outcomes, and every alert has such a case), each rule carries what an on-call needs
 * (severity, summary, description, a runbook section of docs/operations.md that names it), and
 * every metric a rule reads is one a real running gateway or cloud serves. promtool is Debian's
 * `prometheus` package: missing, the promtool checks skip with a message (and fail under CI=true).
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { headingAnchors } from '../support/docs.js';
import { requireBinary, tempDir } from '../support/gateway.js';
import { type LiveMetrics, liveMetrics, sampleNamesOf } from '../support/live-metrics.js';
import { promqlMetricNames, readText, run } from './support.js';

interface Rule { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
const rules = (parse(readText('deploy/prometheus/alerts.yml')) as { groups: Array<{ name: string; rules: Rule[] }> }).groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert);

interface PromtoolTest { name: string; alert_rule_test?: Array<{ alertname: string; eval_time: string; exp_alerts: Array<{ exp_labels: Record<string, string> }> }> }
const unitTests = parse(readText('deploy/prometheus/alerts.test.yml')) as { rule_files: string[]; tests: PromtoolTest[] };

const havePromtool = requireBinary('promtool', 'prometheus');
const withPromtool = havePromtool ? it : it.skip;

describe('deploy/prometheus/alerts.yml', () => {
  withPromtool('passes promtool check rules', async () => {
    const r = await run('promtool', ['check', 'rules', 'deploy/prometheus/alerts.yml']);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
  });

  withPromtool('fires every alert on the series of its unit test (promtool test rules)', async () => {
    // The day-long cases (watermark, last success, views age) step through 28 h of evaluations: seconds, not minutes.
    const r = await run('promtool', ['test', 'rules', 'deploy/prometheus/alerts.test.yml'], {}, 110_000);
    expect({ code: r.code, out: r.stdout + r.stderr }).toEqual({ code: 0, out: expect.stringContaining('SUCCESS') });
  }, 120_000);

  withPromtool('promtool test rules fails when a rule does not fire as its test expects (the check can fail)', () => {
    // BraidForwarderFailing's own test case against a copy of the rules with its threshold out of reach.
    const dir = tempDir('braid-promtool-');
    try {
      writeFileSync(join(dir.path, 'alerts.yml'), readText('deploy/prometheus/alerts.yml')
        .replace('braid_forward_consecutive_failures >= 5', 'braid_forward_consecutive_failures >= 500'));
      const only = unitTests.tests.filter((t) => t.name === 'BraidForwarderFailing');
      expect(only).toHaveLength(1);
      writeFileSync(join(dir.path, 'alerts.test.yml'), stringify({ ...unitTests, tests: only }));
      const r = spawnSync('promtool', ['test', 'rules', join(dir.path, 'alerts.test.yml')], { encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(r.stdout + r.stderr).toMatch(/FAILED[\s\S]*BraidForwarderFailing/);
    } finally {
      dir.remove();
    }
  });

  it('has a unit test for every alert that expects it to fire, and only alerts of the file', () => {
    expect(unitTests.rule_files).toEqual(['alerts.yml']);
    const firing = new Set(unitTests.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    expect(alerts.map((a) => a.alert).filter((n) => !firing.has(n!))).toEqual([]);
    const names = new Set(alerts.map((a) => a.alert));
    expect([...firing].filter((n) => !names.has(n))).toEqual([]);
    expect(names.size).toBe(alerts.length);
  });

  it('gives every alert a severity, a summary, a description and a runbook section that names it', () => {
    const doc = readText('docs/operations.md');
    const anchors = headingAnchors(doc);
    const problems: string[] = [];
    for (const a of alerts) {
      if (!['critical', 'warning'].includes(a.labels?.severity ?? '')) problems.push(`${a.alert}: severity ${a.labels?.severity}`);
      for (const k of ['summary', 'description', 'runbook_url']) if (!a.annotations?.[k]) problems.push(`${a.alert}: no ${k}`);
      const m = /^docs\/operations\.md#(.+)$/.exec(a.annotations?.runbook_url ?? '');
      if (!m || !anchors.has(m[1])) { problems.push(`${a.alert}: runbook ${a.annotations?.runbook_url} is no heading of docs/operations.md`); continue; }
      // The section the runbook points to (up to the next heading) names the alert.
      const lines = doc.split('\n');
      const start = lines.findIndex((l) => /^#{2,4} /.test(l) && headingAnchors(l).has(m[1]));
      const end = lines.findIndex((l, i) => i > start && /^#{1,4} /.test(l));
      if (!lines.slice(start, end === -1 ? undefined : end).join('\n').includes(`\`${a.alert}\``)) problems.push(`${a.alert}: not named in its runbook section #${m[1]}`);
    }
    expect(problems).toEqual([]);
  });

  it('is what docs/operations.md describes: linked, not copied, with its number of rules', () => {
    const doc = readText('docs/operations.md');
    expect(doc).toContain('](../deploy/prometheus/alerts.yml)');
    // No second copy of the rules to drift from the file.
    expect(doc).not.toMatch(/^\s*(?:-\s*)?(?:alert|expr):/m);
    expect(doc).toContain(`${alerts.length} rules`);
  });

  describe('reads only metrics a running gateway or cloud serves', () => {
    let live: LiveMetrics;
    beforeAll(async () => { live = await liveMetrics(); }, 30_000);

    it('every metric name of every rule exists (`up` is Prometheus\' own)', () => {
      const known = sampleNamesOf(new Map([...live.families].map(([n, f]) => [n, f.type])));
      known.add('up');
      const unknown = rules.flatMap((r) => {
        const names = promqlMetricNames(r.expr);
        return names.length === 0 ? [`${r.alert}: reads no metric`] : names.filter((n) => !known.has(n)).map((n) => `${r.alert}: ${n}`);
      });
      expect(unknown).toEqual([]);
    });

    it('the name extraction finds names (and would report a misspelt one)', () => {
      expect(promqlMetricNames('histogram_quantile(0.99, sum by (instance, le) (rate(braid_query_seconds_bucket{view!~"x"}[5m]))) > 1'))
        .toEqual(['braid_query_seconds_bucket']);
      expect(promqlMetricNames('braid_views_age_seconds > 26 * 3600 and increase(braid_ingest_readings_totl[1d]) > 2e9'))
        .toEqual(['braid_views_age_seconds', 'braid_ingest_readings_totl']);
    });
  });
});
