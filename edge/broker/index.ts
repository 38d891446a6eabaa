/**
 * The gateway's MQTT broker: aedes with the device registry for auth, the device ACL, limits, and
 * the telemetry path into the outbox. Listeners: TCP, and WebSocket and TLS when configured.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { Aedes, type Client, type PublishPacket } from 'aedes';
import { BufferList } from 'bl';
import mqttPacket from 'mqtt-packet';
import type { Registry } from 'prom-client';
import { WebSocketServer, createWebSocketStream } from 'ws';
import type { Logger } from '../../shared/logger.js';
import type { Outbox } from '../outbox/index.js';
import type { DeviceRegistry } from '../registry/index.js';
import { errorsTopic, isTelemetryOf, telemetryTopic, topicAllowed } from './acl.js';
import { fastPublish, type FastTopic, type PacketParser } from './fast-publish.js';
import { AuthThrottle } from './auth-throttle.js';
import { RateLimiter, limitPacketSize } from './limits.js';
import { createBrokerMetrics, type BrokerMetrics } from './metrics.js';
import { RetransmitStamps } from './retransmit.js';
import { Sessions } from './sessions.js';
import { handleTelemetry, isTelemetryTopic } from './telemetry.js';

export { topicAllowed, telemetryTopic, errorsTopic } from './acl.js';

export interface BrokerOptions {
  host: string;
  /** MQTT over TCP; 0 picks a free port. */
  port: number;
  /** MQTT over WebSocket at path /mqtt; null is off. */
  wsPort: number | null;
  /** MQTT over TLS; null is off. */
  tlsPort: number | null;
  tlsCert: string | null;
  tlsKey: string | null;
  /** ms a connection has to send CONNECT. */
  connectTimeoutMs: number;
  /** Longest keepalive a device may ask for, in seconds; 0 = any. */
  keepaliveMaxSeconds: number;
  maxPacketBytes: number;
  maxTopicLevels: number;
  maxClientIdLength: number;
  drainTimeoutMs: number;
  queueLimit: number;
  /** Messages per second per device, sustained; `rateBurst` at once. */
  ratePerDevice: number;
  rateBurst: number;
  /** Messages of one device read and waiting for their commit before its socket is held (telemetry.ts); 0: each holds it. */
  maxUnackedPerDevice: number;
  maxPayloadBytes: number;
  maxReadingsPerMessage: number;
  /** Secret checks run at once (scrypt, for operator-chosen secrets); `authQueueMax` more CONNECTs may wait. */
  authConcurrency: number;
  authQueueMax: number;
  /** Failures of one client id / one address before its CONNECTs wait (exponential, capped). */
  authBackoffAfterFailures: number;
  authBackoffAfterAddressFailures: number;
  authBackoffInitialMs: number;
  authBackoffMaxMs: number;
  authTrackedMax: number;
  /** ms between looks at the registry for removed or rotated devices. */
  revocationCheckMs: number;
}

export interface BrokerDeps {
  outbox: Outbox;
  registry: DeviceRegistry;
  logger: Logger;
  metrics: Registry;
  now?: () => number;
}

// MQTT 3.1.1 CONNACK return codes [MQTT-3.2.2.3]
const IDENTIFIER_REJECTED = 2;
const SERVER_UNAVAILABLE = 3;
const NOT_AUTHORIZED = 5;

/**
 * How long a CONNECT refused because the outbox cannot commit waits for its CONNACK 3, in ms: a
 * client waits for the CONNACK before it reconnects, so even one that retries at once costs one
 * attempt a second, not dozens.
 */
const STORE_UNAVAILABLE_ANSWER_MS = 1000;

/**
 * mqtt-packet's writer fills a cache at its first packet: 65,536 two-byte Buffers (every packet id
 * and topic length it may write), 6.6 MB of heap for the life of the process, a tenth of an idle
 * gateway's live heap. Without it a PUBACK's packet id is one 2-byte slice of Node's buffer pool.
 * Process-wide (one mqtt-packet for aedes and MQTT.js), set before the broker writes anything.
 */
mqttPacket.writeToStream.cacheNumbers = false;

/**
 * mqtt-packet's parser gathers a connection's bytes in a `bl` BufferListStream: a Duplex stream
 * (readable and writable states, listeners, ~0.7 KB) of which it uses only the list's methods
 * (append, consume, slice, read*). The plain BufferList has the same methods without the stream.
 * Swapped as aedes made the client, before a byte was read; a parser reset after an error (the
 * connection then closes) makes a stream again.
 */
function lightenParser(client: Client): void {
  const parser = (client as unknown as { _parser?: { _list?: { length: number } } })._parser;
  if (parser?._list && parser._list.length === 0) parser._list = new BufferList();
}

/**
 * What mqtt-packet's parser keeps of a client's CONNECT for the packets after it: the protocol
 * version (and a bridge's flag). It keeps the whole CONNECT otherwise, the password's Buffer
 * included, for as long as the connection lives (~0.25 KB a device).
 */
function forgetConnectPacket(client: Client): void {
  const parser = (client as unknown as { _parser?: { settings?: { protocolVersion?: number; bridgeMode?: boolean } } })._parser;
  const s = parser?.settings;
  if (!parser || !s) return;
  parser.settings = s.bridgeMode ? { protocolVersion: s.protocolVersion, bridgeMode: true } : { protocolVersion: s.protocolVersion };
}

/** The peer's address: TCP and TLS sockets carry it, a WebSocket stream's request does. */
function addressOf(client: Client): string | undefined {
  const c = client as unknown as { conn?: { remoteAddress?: string }; req?: { socket?: { remoteAddress?: string } } };
  return c.conn?.remoteAddress ?? c.req?.socket?.remoteAddress;
}

type AedesPublish = (packet: { topic: string }, client: Client | null | ((err?: Error | null) => void), done?: (err?: Error | null) => void) => void;

/**
 * A device's telemetry ends at the outbox: once it is durable and answered (telemetry.ts), aedes'
 * publish has nothing left to do for it (a copy of the packet, the retained store's step, routing
 * through mqemitter with qlobber's topic split, the 'publish' event nobody here listens to), since
 * authorizeForward drops telemetry for every subscriber anyway. So a device's own telemetry is
 * not routed: ~6% of the main thread at QoS 1 (docs/benchmarks.md, 2026-12-06 session 7). Every
 * other publish, the broker's own and a device's non-telemetry ones, takes aedes' path.
 */
function skipTelemetryRouting(aedes: Aedes): void {
  const a = aedes as unknown as { publish: AedesPublish };
  const publish = a.publish;
  a.publish = function (this: Aedes, packet, client, done) {
    if (client !== null && typeof client === 'object' && isTelemetryOf(client.id, packet.topic)) {
      done?.(null);
      return;
    }
    publish.call(this, packet, client, done);
  };
}

type Authorize = (client: Client, packet: PublishPacket, done: (err?: Error | null) => void) => void;

interface ClientInternals {
  id: string;
  connected: boolean;
  connackSent: boolean;
  _parsingBatch: number;
  _nextBatch: (err?: Error | null) => void;
  _keepaliveInterval: number;
  _keepaliveTimer: { refresh: () => void } | null;
  _parser: { listeners: (e: string) => Array<(packet: unknown) => void>; removeListener: (e: string, f: (packet: unknown) => void) => void; on: (e: string, f: (packet: unknown) => void) => void };
}

/**
 * A connected device's own QoS 0 and 1 telemetry goes from mqtt-packet's parser straight to
 * `authorize` (the broker's authorizePublish: retain, ACL, telemetry path), with aedes' batch
 * counting, keepalive refresh and callback to read on: what aedes' enqueue, handle, handlePublish
 * (its topic checks, a bound callback and a closure a message) and, once answered, its QoS 0
 * publish (skipTelemetryRouting: nothing) did for such a message (docs/benchmarks.md, 2026-12-06
 * session 8). A client id with `#`, `+` or `/` (aedes refuses such a topic or counts its levels),
 * QoS 2, every other packet, and anything before the CONNACK take aedes' own path.
 */
function shortcutTelemetry(client: Client, authorize: Authorize): void {
  const c = client as unknown as ClientInternals;
  const parser = c._parser;
  const enqueue = parser?.listeners('packet')[0];
  if (!enqueue) return;
  parser.removeListener('packet', enqueue);
  parser.on('packet', function (this: unknown, packet: unknown) {
    const p = packet as PublishPacket;
    if (p.cmd === 'publish' && p.qos !== 2 && c.connackSent && c.connected && isTelemetryOf(c.id, p.topic) && plainId(c.id)) {
      c._parsingBatch++;
      if (c._keepaliveInterval > 0) c._keepaliveTimer?.refresh();
      authorize(client, p, c._nextBatch);
      return;
    }
    enqueue.call(this, packet);
  });
}

/**
 * Read a connected MQTT 3.1.1 device's own QoS 0/1 telemetry from its socket's chunks without
 * mqtt-packet's byte list (fast-publish.ts); what is not such a packet goes to mqtt-packet.
 */
function readTelemetryFast(client: Client, maxPacketBytes: number): void {
  const c = client as unknown as ClientInternals & { _parser: PacketParser & { settings?: { protocolVersion?: number } } };
  const parser = c._parser;
  if (!parser || typeof parser.parse !== 'function') return;
  let topic: FastTopic | null = null;
  fastPublish(parser, maxPacketBytes, () => {
    if (!c.connackSent || !c.connected || parser.settings?.protocolVersion === 5) return null;
    // A client's id is fixed from its CONNECT on (a reconnect is another client).
    if (topic === null) {
      if (!plainId(c.id)) return null;
      const text = telemetryTopic(c.id);
      topic = { text, bytes: Buffer.from(text, 'utf8') };
    }
    return topic;
  });
}

/** Whether a client id makes a telemetry topic aedes takes as it is (no wildcard, no extra level). */
function plainId(id: string): boolean {
  return id.indexOf('/') < 0 && id.indexOf('+') < 0 && id.indexOf('#') < 0;
}

function authError(message: string, returnCode: number): Error & { returnCode: number } {
  return Object.assign(new Error(message), { returnCode });
}

export class GatewayBroker {
  readonly aedes: Aedes;
  readonly metrics: BrokerMetrics;
  private readonly logger: Logger;
  private readonly opts: BrokerOptions;
  private tcp: NetServer | null = null;
  private tls: TlsServer | null = null;
  private ws: { http: HttpServer; wss: WebSocketServer } | null = null;
  private closed = false;
  /**
   * Sockets aedes has not taken as a client yet (before or during CONNECT), for close() to end.
   * Without a 'close' listener on each (a listener array, a once wrapper and a closure: ~0.3 KB a
   * connection): a socket leaves when aedes emits 'client' for it, and the ones that closed before
   * that are swept out whenever the set has doubled.
   */
  private readonly sockets = new Set<Socket>();
  private sweepAt = 64;
  private readonly registry: DeviceRegistry;

  private constructor(aedes: Aedes, metrics: BrokerMetrics, logger: Logger, opts: BrokerOptions, registry: DeviceRegistry) {
    this.aedes = aedes;
    this.registry = registry;
    this.metrics = metrics;
    this.logger = logger;
    this.opts = opts;
  }

  static async create(deps: BrokerDeps, opts: BrokerOptions): Promise<GatewayBroker> {
    const metrics = createBrokerMetrics(deps.metrics);
    const logger = deps.logger;
    const now = deps.now ?? Date.now;
    const rate = new RateLimiter(opts.ratePerDevice, opts.rateBurst, now);
    let broker: GatewayBroker;
    const report = (deviceId: string, body: Record<string, unknown>) => {
      const payload = Buffer.from(JSON.stringify({ ...body, at: new Date(now()).toISOString() }));
      broker.aedes.publish({ cmd: 'publish', topic: errorsTopic(deviceId), payload, qos: 0, retain: false, dup: false }, () => {});
    };
    const telemetryDeps = {
      outbox: deps.outbox, metrics, logger, rate, report, now, retransmits: new RetransmitStamps(), maxUnacked: opts.maxUnackedPerDevice,
      limits: { maxPayloadBytes: opts.maxPayloadBytes, maxReadingsPerMessage: opts.maxReadingsPerMessage },
    };

    // The keepalive each CONNECT asked for, and whether it carried a will, read in preConnect for
    // the checks in authenticate (which answers with a CONNACK return code; preConnect cannot).
    const keepalives = new WeakMap<Client, number>();
    const wills = new WeakSet<Client>();
    const throttle = new AuthThrottle({
      concurrency: opts.authConcurrency,
      queueMax: opts.authQueueMax,
      idFailures: opts.authBackoffAfterFailures,
      addressFailures: opts.authBackoffAfterAddressFailures,
      initialMs: opts.authBackoffInitialMs,
      maxMs: opts.authBackoffMaxMs,
      trackedMax: opts.authTrackedMax,
    }, now);
    const sessions = new Sessions();
    const refuse = (reason: string, message: string, returnCode: number) => {
      metrics.connectRefused.inc({ reason });
      return authError(message, returnCode);
    };

    /**
     * The secret check: a generated secret whose salted SHA-256 matches, or a remembered chosen
     * one, at once; else a turn behind the throttle, then scrypt (a failed generated secret takes
     * the turn too, so it counts toward the backoff). Resolves null (admitted, session recorded)
     * or the error to refuse with.
     */
    const authenticateSecret = async (client: Client, id: string, secret: string): Promise<(Error & { returnCode: number }) | null> => {
      const generation = deps.registry.generation;
      const found = await deps.registry.lookup(id, secret);
      let ok = false;
      if (found?.remembered) {
        ok = true;
      } else if (found) {
        const address = addressOf(client);
        const admission = throttle.admit(id, address, () => client.closed);
        metrics.authPending.set(throttle.pending);
        const turn = await admission;
        metrics.authPending.set(throttle.pending);
        if (!turn.ok) {
          // Closed while it waited: aedes answers nothing to a closed client, nothing to count.
          if (turn.reason === 'gone') return authError('connection closed while waiting for its check', SERVER_UNAVAILABLE);
          logger.info({ device: id, address, reason: turn.reason }, 'device refused before its secret was checked');
          return turn.reason === 'busy'
            ? refuse('auth_busy', 'server unavailable: too many connects being checked', SERVER_UNAVAILABLE)
            : refuse('auth_backoff', `server unavailable: too many failed connects, retry in ${Math.ceil(turn.retryMs / 1000)} s`, SERVER_UNAVAILABLE);
        }
        try {
          ok = await found.check();
        } finally {
          turn.release();
          metrics.authPending.set(throttle.pending);
        }
        metrics.verifications.inc({ result: ok ? 'ok' : 'fail' });
        if (ok) throttle.succeeded(id);
        else throttle.failed(id, address);
      }
      // A registry change seen while this was checked: read the row again, it must be the same.
      if (ok && found && deps.registry.generation !== generation) {
        const again = await deps.registry.lookup(id, secret);
        ok = again?.version === found.version;
      }
      if (!ok || !found) {
        metrics.authFailures.inc({ reason: 'bad_credentials' });
        logger.info({ device: id }, 'device refused: unknown device or wrong secret');
        return authError('not authorized', NOT_AUTHORIZED);
      }
      sessions.admit(client, found.version);
      return null;
    };

    const aedes = await Aedes.createBroker({
      id: 'braid-gateway',
      connectTimeout: opts.connectTimeoutMs,
      // aedes' own check refuses with CONNACK 6, a return code MQTT 3.1.1 reserves [MQTT-3.2.2.3]
      // (clients report "unknown"); the limit is enforced in authenticate instead.
      keepaliveLimit: 0,
      maxTopicLevels: opts.maxTopicLevels,
      maxClientsIdLength: opts.maxClientIdLength,
      drainTimeout: opts.drainTimeoutMs,
      queueLimit: opts.queueLimit,
      heartbeatInterval: 60_000, // 1 minute

      preConnect(client, packet, done) {
        keepalives.set(client, packet.keepalive ?? 0);
        if (packet.will) wills.add(client);
        done(null, true);
      },

      authenticate(client, username, password, done) {
        const id = client.id;
        const keepalive = keepalives.get(client) ?? 0;
        const will = wills.has(client);
        // Read once: entries kept for the life of each connection are 10k ephemerons for V8's
        // marker to go through at every full GC of a gateway holding 10k devices.
        keepalives.delete(client);
        wills.delete(client);
        // Keepalive 0 (never) is over any limit too. Refused as mosquitto does for MQTT < 5
        // (max_keepalive): CONNACK 2, the one 3.1.1 code about what the client sent.
        if (opts.keepaliveMaxSeconds > 0 && (keepalive === 0 || keepalive > opts.keepaliveMaxSeconds)) {
          metrics.limitRefused.inc({ limit: 'keepalive_max' });
          return done(authError(`keepalive ${keepalive} s is not within 1..${opts.keepaliveMaxSeconds} s`, IDENTIFIER_REJECTED), false);
        }
        // aedes checks the client id length for MQTT 3.1 only; devices speak 3.1.1 too.
        if (id.length > opts.maxClientIdLength) {
          metrics.authFailures.inc({ reason: 'client_id_too_long' });
          return done(authError('client id too long', IDENTIFIER_REJECTED), false);
        }
        if (username !== id) {
          metrics.authFailures.inc({ reason: username === undefined ? 'no_username' : 'username_mismatch' });
          return done(authError('username must equal the client id (the device id)', NOT_AUTHORIZED), false);
        }
        if (!password || password.length === 0) {
          metrics.authFailures.inc({ reason: 'no_password' });
          return done(authError('password (device secret) required', NOT_AUTHORIZED), false);
        }
        // A will is a message the gateway would publish for the device after it is gone (after a
        // revocation too): on the telemetry topic a reading nobody sent, elsewhere one nobody but
        // the device may read. Refused as mosquitto refuses a will its ACL denies.
        if (will) {
          return done(refuse('will', 'will messages are not accepted', NOT_AUTHORIZED), false);
        }
        // Devices would be taken and then dropped at their first publish: tell them to come back,
        // after a moment, so a device that reconnects at once still tries about once a second.
        if (deps.outbox.commitsFailingSince() !== null) {
          const err = refuse('store_unavailable', 'server unavailable: the outbox cannot commit', SERVER_UNAVAILABLE);
          setTimeout(() => done(err, false), STORE_UNAVAILABLE_ANSWER_MS).unref();
          return;
        }
        authenticateSecret(client, id, password.toString('utf8')).then(
          (err) => done(err, err === null),
          (err) => {
            logger.error({ err, device: id }, 'registry lookup failed');
            metrics.authFailures.inc({ reason: 'registry_error' });
            done(authError('server unavailable', SERVER_UNAVAILABLE), false);
          },
        );
      },

      authorizePublish(client, packet, done) {
        if (!client) return done(null); // the broker's own publishes (error reports)
        // Telemetry is not state: the gateway keeps no retained message a device could plant for
        // others (or itself) to be replayed, on any topic. The reading itself is kept. Cleared
        // here, before aedes stores or routes the packet; refusing it would close the connection
        // (no negative PUBACK in 3.1.1) and the device would resend it forever.
        if (packet.retain) {
          packet.retain = false;
          metrics.retainStripped.inc();
        }
        if (!topicAllowed(client.id, packet.topic)) {
          metrics.aclDenied.inc({ action: 'publish' });
          logger.info({ device: client.id, topic: packet.topic }, 'publish refused by ACL');
          // MQTT 3.1.1 has no negative PUBACK: the connection is closed.
          return done(new Error(`publish to ${packet.topic} not allowed for ${client.id}`));
        }
        if (!isTelemetryOf(client.id, packet.topic)) return done(null);
        handleTelemetry(telemetryDeps, client, packet, done);
      },

      // Telemetry goes to the outbox, not to subscribers (the device itself is the only one the ACL
      // lets subscribe to it): aedes has it before it is durable when it is acknowledged out of band.
      authorizeForward(_client, packet) {
        return isTelemetryTopic(packet.topic) ? null : packet;
      },

      authorizeSubscribe(client, sub, done) {
        if (topicAllowed(client.id, sub.topic)) return done(null, sub);
        metrics.aclDenied.inc({ action: 'subscribe' });
        logger.info({ device: client.id, topic: sub.topic }, 'subscribe refused by ACL');
        // SUBACK return code 0x80 (failure) for this filter [MQTT-3.9.3]; the others still apply.
        done(null, null);
      },
    });
    broker = new GatewayBroker(aedes, metrics, logger, opts, deps.registry);
    skipTelemetryRouting(aedes);

    aedes.on('client', (client: Client) => {
      // aedes closes its clients itself (close() below); a WebSocket stream was never in the set.
      broker.sockets.delete((client as unknown as { conn: Socket }).conn);
      limitPacketSize(client, opts.maxPacketBytes, () => metrics.limitRefused.inc({ limit: 'packet_size' }));
    });
    aedes.on('clientReady', (client: Client) => {
      forgetConnectPacket(client);
      metrics.connects.inc();
      metrics.connections.set(aedes.connectedClients);
      logger.debug({ device: client.id }, 'device connected');
    });
    aedes.on('clientDisconnect', (client: Client) => {
      metrics.connections.set(aedes.connectedClients);
      rate.forget(client.id);
      sessions.drop(client);
    });
    // A session also ends when the device's credential does [INV-7]: removed or rotated by
    // `braid device ...` in another process, seen within revocationCheckMs.
    await deps.registry.watch(opts.revocationCheckMs, (versions) => {
      sessions.revoke(versions, (client, reason) => {
        metrics.sessionsRevoked.inc({ reason });
        logger.info({ device: client.id, reason }, 'session ended: the device\'s credential was revoked');
        client.close();
      });
    }, (err) => logger.error({ err }, 'checking the device registry for changes failed'));
    aedes.on('clientError', (client: Client, err: Error) => {
      metrics.clientErrors.inc();
      logger.debug({ device: client?.id, err: err.message }, 'client error');
    });
    aedes.on('connectionError', (_client: Client, err: Error) => {
      metrics.clientErrors.inc();
      logger.debug({ err: err.message }, 'connection error');
    });
    aedes.on('keepaliveTimeout', () => metrics.limitRefused.inc({ limit: 'keepalive' }));
    return broker;
  }

  /** Open the listeners; resolves with the ports bound. */
  async listen(): Promise<{ port: number; wsPort: number | null; tlsPort: number | null }> {
    const { host } = this.opts;
    const aedesHandle = this.aedes.handle;
    const aedes = this.aedes as unknown as { authorizePublish: Authorize };
    const authorize: Authorize = (client, packet, done) => aedes.authorizePublish(client, packet, done);
    const taken = (client: Client) => {
      lightenParser(client);
      shortcutTelemetry(client, authorize);
      readTelemetryFast(client, this.opts.maxPacketBytes);
    };
    // Every socket, so close() can end those aedes does not know yet.
    const handle = (socket: Socket) => {
      if (this.sockets.size >= this.sweepAt) {
        for (const s of this.sockets) if (s.destroyed) this.sockets.delete(s);
        this.sweepAt = Math.max(64, 2 * this.sockets.size);
      }
      this.sockets.add(socket);
      taken(aedesHandle(socket));
    };
    this.tcp = createNetServer(handle);
    const port = await listenOn(this.tcp, this.opts.port, host);
    let wsPort: number | null = null;
    if (this.opts.wsPort !== null) {
      const http = createHttpServer((_req, res) => { res.writeHead(426, { 'content-type': 'text/plain' }).end('MQTT over WebSocket: connect to /mqtt\n'); });
      const wss = new WebSocketServer({ server: http, path: '/mqtt', maxPayload: this.opts.maxPacketBytes + 16 });
      wss.on('connection', (socket, req) => taken(aedesHandle(createWebSocketStream(socket), req)));
      this.ws = { http, wss };
      wsPort = await listenOn(http, this.opts.wsPort, host);
    }
    let tlsPort: number | null = null;
    if (this.opts.tlsPort !== null) {
      if (!this.opts.tlsCert || !this.opts.tlsKey) throw new Error('mqtt.tlsPort needs mqtt.tlsCert and mqtt.tlsKey');
      this.tls = createTlsServer({ cert: readFileSync(this.opts.tlsCert), key: readFileSync(this.opts.tlsKey) }, handle);
      tlsPort = await listenOn(this.tls, this.opts.tlsPort, host);
    }
    this.logger.info({ port, wsPort, tlsPort }, 'MQTT listening');
    return { port, wsPort, tlsPort };
  }

  get connected(): number {
    return this.aedes.connectedClients;
  }

  /** Ids of the devices connected now, sorted (aedes keeps them in `clients`, which its types leave out). */
  connectedDevices(): string[] {
    const clients = (this.aedes as unknown as { clients: Record<string, Client> }).clients;
    return Object.keys(clients).sort();
  }

  /**
   * Stop accepting connections, disconnect devices, close aedes; resolves once every listener has
   * closed. Idempotent. aedes closes the sessions it knows; a socket that has not sent CONNECT yet
   * (or is still being checked) is not one of them and is destroyed here, or a listener's 'close'
   * would wait for its connect timeout.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.registry.unwatch();
    const servers: Array<NetServer | HttpServer | TlsServer> = [this.tcp, this.tls, this.ws?.http].filter((s): s is NetServer => s !== null && s !== undefined);
    // Listen for 'close' before close(): `listening` is already false once close() returned.
    const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    this.ws?.wss.clients.forEach((c) => c.terminate());
    this.ws?.wss.close();
    this.ws?.http.closeAllConnections();
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(closed);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function listenOn(server: NetServer | HttpServer | TlsServer, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
