/**
 * Test support: one ingest node of a cluster in a process of its own, to be killed with SIGKILL
 * (test/cloud/ingest-lease.test.ts). An IngestService on the PostgreSQL store with its staging
 * lease, streaming batches of its own as gateways would (each retried until it is acknowledged),
 * and printing each acknowledgement as it gets it:
 *
 *   node --import tsx test/support/lease-node.ts DATA_DIR PG_URL LEASE_MS GATEWAYS N BATCH
 *
 * stdout: `ready <nodeId>`, then `ack <gateway> <lastSeq>` per acknowledged batch, `done` at the end
 * (then it idles until killed).
 */
import { Registry } from 'prom-client';
import { IngestService } from '../../cloud/ingest/service.js';
import { validateIngestBody } from '../../cloud/ingest/validate.js';
import { openCloudStore } from '../../cloud/store/cloud-store.js';
import { createLogger } from '../../shared/logger.js';
import { ingestBody, makeReadings } from './cloud.js';

const [dataDir, url, leaseMs, gateways, n, batch] = process.argv.slice(2);
const N = Number(n);
const BATCH = Number(batch);
const logger = createLogger({ level: 'warn' }, 2);
const store = await openCloudStore(url, dataDir, { poolMax: 4 });
const ingest = new IngestService({ dataDir, store: store.ingest, nodes: store.nodes, leaseMs: Number(leaseMs), logger, registry: new Registry() },
  { sealMaxReadings: 700, sealMaxAgeMs: 250, orphanScanMs: 200, groupCommitMs: 2 });
await ingest.start();
process.stdout.write(`ready ${ingest.nodeId}\n`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
await Promise.all(gateways.split(',').map(async (g) => {
  for (let from = 1; from <= N; from += BATCH) {
    const b = validateIngestBody(ingestBody(g, makeReadings(from, Math.min(N, from + BATCH - 1), { days: 2 })));
    for (;;) {
      try {
        await ingest.submit(b);
        process.stdout.write(`ack ${g} ${b.lastSeq}\n`);
        break;
      } catch {
        await sleep(10);
      }
    }
  }
}));
process.stdout.write('done\n');
setInterval(() => undefined, 60_000);
