/**
 * Peer (b): stock aedes, in memory, default options, no auth: what the Braid gateway is built on,
 * without its durable commit. Plain JavaScript, so it runs on bare node (under tsx it would carry
 * tsx's loader thread, about 30 MB of RSS that stock aedes does not have). Listens on 127.0.0.1
 * (port from argv[2], 0 = free) and prints `aedes ready: mqtt://127.0.0.1:PORT`. SIGTERM closes it.
 */
import { createServer } from 'node:net';
import { Aedes } from 'aedes';

const port = Number(process.argv[2] ?? 0);
const aedes = await Aedes.createBroker();
const server = createServer(aedes.handle);
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`aedes ready: mqtt://127.0.0.1:${server.address().port}\n`);
});
const stop = () => {
  server.close();
  aedes.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
