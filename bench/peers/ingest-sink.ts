/**
 * A stand-in for cloud ingest (docs/ingest-protocol.md) that stores nothing: POST /api/v1/ingest
 * gunzips and parses the body and answers `{"ackSeq": lastSeq}` at once. It measures the
 * forwarder, not the cloud. GET /stats answers what it has seen. Listens on 127.0.0.1 (port from
 * argv[2], 0 = free) and prints `sink ready: http://127.0.0.1:PORT`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { gunzip as gunzipCb } from 'node:zlib';

const gunzip = promisify(gunzipCb);
const port = Number(process.argv[2] ?? 0);
const stats = { requests: 0, readings: 0, bytes: 0, lastSeq: 0, firstAt: 0, lastAt: 0, errors: 0 };

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats));
    return;
  }
  if (req.method !== 'POST' || req.url !== '/api/v1/ingest') {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"code":"BRAID_ERR_NOT_FOUND","message":"no such route"}');
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const body = req.headers['content-encoding'] === 'gzip' ? gunzip(raw) : Promise.resolve(raw);
    body.then((buf) => {
      const doc = JSON.parse(buf.toString('utf8')) as { lastSeq: number; readings: unknown[] };
      const now = Date.now();
      if (!stats.firstAt) stats.firstAt = now;
      stats.lastAt = now;
      stats.requests++;
      stats.readings += doc.readings.length;
      stats.bytes += raw.length;
      stats.lastSeq = Math.max(stats.lastSeq, doc.lastSeq);
      res.writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ ackSeq: doc.lastSeq, stored: doc.readings.length, duplicates: 0 }));
    }).catch((err: Error) => {
      stats.errors++;
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'BRAID_ERR_BAD_REQUEST', message: err.message }));
    });
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`sink ready: http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
