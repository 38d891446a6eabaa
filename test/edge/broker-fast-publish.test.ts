/**
 * edge/broker/fast-publish.ts against mqtt-packet's own parser: the same byte streams, cut into
 * the same chunks, give the same packets (fields and values) and the same errors, whether a packet
 * was read fast (the telemetry topic at QoS 0 or 1, whole in its chunk) or by the parser.
 */
import mqttPacket from 'mqtt-packet';
import { fastPublish, type PacketParser } from '../../edge/broker/fast-publish.js';

const TOPIC = 'devices/dév-1/telemetry';
const topic = { text: TOPIC, bytes: Buffer.from(TOPIC, 'utf8') };

function rng(seed: number): () => number {
  return () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32;
  };
}

/** A stream of packets: mostly telemetry PUBLISHes, and the packets the fast path leaves to the parser. */
function stream(rand: () => number, n: number, others = 0.3): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const x = rand() < others ? 0.7 + rand() * 0.3 : rand() * 0.7;
    const size = rand() < 0.05 ? 200 + Math.floor(rand() * 20_000) : Math.floor(rand() * 60);
    const payload = Buffer.alloc(size, Math.floor(rand() * 256));
    for (let k = 0; k < Math.min(size, 40); k++) payload[k] = Math.floor(rand() * 256);
    const messageId = 1 + Math.floor(rand() * 65535);
    const flags = { retain: rand() < 0.1, dup: rand() < 0.1 };
    if (x < 0.7) parts.push(mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload, qos: rand() < 0.5 ? 1 : 0, messageId, ...flags }));
    else if (x < 0.78) parts.push(mqttPacket.generate({ cmd: 'publish', topic: 'devices/dév-1/telemetrx', payload, qos: 1, messageId, ...flags }));
    else if (x < 0.84) parts.push(mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload, qos: 2, messageId, ...flags }));
    else if (x < 0.88) parts.push(mqttPacket.generate({ cmd: 'publish', topic: 'devices/dév-1/telemetry/x', payload, qos: 0, ...flags }));
    else if (x < 0.94) parts.push(mqttPacket.generate({ cmd: 'pingreq' }));
    else parts.push(mqttPacket.generate({ cmd: 'puback', messageId }));
  }
  return Buffer.concat(parts);
}

function run(chunks: Buffer[], fast: boolean, maxPacketBytes = 1_000_000): { packets: unknown[]; errors: string[]; fastRead: number } {
  const parser = mqttPacket.parser({ protocolVersion: 4 }) as unknown as PacketParser & { on: (e: string, f: (x: never) => void) => void };
  const packets: unknown[] = [];
  const errors: string[] = [];
  let fastRead = 0;
  parser.on('packet', (p: { payload?: Buffer }) => {
    if (Object.getPrototypeOf(p) === Object.prototype) fastRead++;
    // A copy of each field: the payload as bytes (a view of the chunk either way).
    packets.push({ ...p, payload: p.payload ? Buffer.from(p.payload).toString('hex') : p.payload });
  });
  parser.on('error', (e: Error) => errors.push(e.message));
  if (fast) fastPublish(parser, maxPacketBytes, () => topic);
  for (const c of chunks) parser.parse(c);
  return { packets, errors, fastRead };
}

function cut(buf: Buffer, rand: () => number, mode: 'whole' | 'random' | 'bytes'): Buffer[] {
  if (mode === 'whole') return [buf];
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length;) {
    const n = mode === 'bytes' ? 1 : 1 + Math.floor(rand() * 3000);
    out.push(buf.subarray(i, i + n));
    i += n;
  }
  return out;
}

test.each(['whole', 'random', 'bytes'] as const)('the same packets as mqtt-packet, the stream cut %s', (mode) => {
  let fastRead = 0;
  for (let seed = 1; seed <= (mode === 'bytes' ? 2 : 8); seed++) {
    const rand = rng(seed);
    // Telemetry alone (read fast while the chunks hold whole packets), and mixed with the rest.
    const buf = stream(rand, mode === 'bytes' ? 60 : 400, seed % 2 ? 0 : 0.3);
    const chunks = cut(buf, rand, mode);
    const stock = run(chunks, false);
    const fast = run(chunks, true);
    expect(fast.packets).toEqual(stock.packets);
    expect(fast.errors).toEqual(stock.errors);
    expect(stock.fastRead).toBe(0);
    if (mode === 'whole' && seed % 2) expect(fast.fastRead).toBe(400);
    fastRead += fast.fastRead;
  }
  // Cut into single bytes, no packet is whole in a chunk: the parser reads them all.
  if (mode === 'bytes') expect(fastRead).toBe(0);
  else expect(fastRead).toBeGreaterThan(0);
});

test('one chunk of whole packets after another: each read fast, payloads views of their chunk', () => {
  const rand = rng(7);
  const chunks = Array.from({ length: 50 }, () => stream(rand, 1 + Math.floor(rand() * 20), 0));
  const stock = run(chunks, false);
  const fast = run(chunks, true);
  expect(fast.packets).toEqual(stock.packets);
  expect(fast.fastRead).toBe(stock.packets.length);
});

test('a chunk that ends after a header, or after a header and its length, is continued by the parser', () => {
  // A PUBACK cut after its header and length: its packet id 0x30 <len> reads as the header of a
  // QoS 0 PUBLISH, and the bytes after as that PUBLISH's telemetry topic and payload.
  const tb = topic.bytes;
  const tail = Buffer.concat([Buffer.from([0x00, tb.length]), tb, Buffer.from('x')]);
  const cont = Buffer.concat([Buffer.from([0x30, tail.length]), tail]);
  for (const chunks of [[Buffer.from([0x40, 0x02]), cont], [Buffer.from([0x40]), Buffer.from([0x02]), cont]]) {
    const stock = run(chunks, false);
    const fast = run(chunks, true);
    expect(stock.packets[0]).toMatchObject({ cmd: 'puback', messageId: (0x30 << 8) | tail.length });
    expect(fast.packets).toEqual(stock.packets);
    expect(fast.errors).toEqual(stock.errors);
    expect(fast.fastRead).toBe(0);
  }
  // Cut after a telemetry PUBLISH's header and length: the body is the parser's, the next whole one fast.
  const one = mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload: Buffer.from('{"t":1}'), qos: 1, messageId: 9, retain: false, dup: false });
  const chunks = [one.subarray(0, 2), one.subarray(2), one];
  const fast = run(chunks, true);
  expect(fast.packets).toEqual(run(chunks, false).packets);
  expect(fast.fastRead).toBe(1);
});

test('a packet over the size limit, a malformed header and MQTT 5 are left to the parser', () => {
  const rand = rng(42);
  const big = mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload: Buffer.alloc(300, 1), qos: 1, messageId: 7, retain: false, dup: false });
  const small = mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload: Buffer.from('{"t":1}'), qos: 1, messageId: 8, retain: false, dup: false });
  const bigFirst = Buffer.concat([big, small]);
  const over = run([bigFirst], true, 200);
  expect(over.packets).toEqual(run([bigFirst], false).packets);
  expect(over.fastRead).toBe(0); // the big one went to the parser, and with it the rest of the chunk
  expect(run([Buffer.concat([small, big])], true, 200).fastRead).toBe(1);

  // QoS bits 11: the parser's error, after the packets before it.
  const bad = Buffer.concat([small, Buffer.from([0x36, 0x02, 0x00, 0x00]), small]);
  const a = run([bad], false);
  const b = run([bad], true);
  expect(b.packets).toEqual(a.packets);
  expect(b.errors).toEqual(a.errors);
  expect(b.errors.length).toBeGreaterThan(0);

  // While the parser holds part of a packet, whole chunks go to it.
  const chunks = cut(stream(rand, 50), rand, 'random');
  expect(run(chunks, true).packets).toEqual(run(chunks, false).packets);

  // No topic now (before the CONNACK, MQTT 5): the parser reads everything.
  const parser = mqttPacket.parser({ protocolVersion: 5 }) as unknown as PacketParser & { on: (e: string, f: (x: never) => void) => void };
  let n = 0;
  parser.on('packet', () => { n++; });
  fastPublish(parser, 1_000_000, () => null);
  parser.parse(mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false, properties: { payloadFormatIndicator: true } }, { protocolVersion: 5 }));
  expect(n).toBe(1);
});
