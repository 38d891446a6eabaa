/**
 * Raw MQTT 3.1.1 packets, for what MQTT.js will not send (tests) and for
 * just enough MQTT 3.1.1 to hold thousands of idle device connections from one light process:
 * CONNECT and PUBLISH encoders and a reader for CONNACK and PUBACK. (MQTT.js costs tens of KB per
 * client, which would make the client side heavier than the brokers measured.)
 */
import { connect as netConnect, type Socket } from 'node:net';

/** A TCP connection to the broker at `mqttUrl` (mqtt://host:port), nothing sent yet; added to `opened` for the test's cleanup. */
export function openSocket(mqttUrl: string, opened: Socket[]): Promise<Socket> {
  const url = new URL(mqttUrl);
  return new Promise((resolve, reject) => {
    const s = netConnect(Number(url.port), url.hostname, () => resolve(s));
    s.once('error', reject);
    opened.push(s);
  });
}

function varLength(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  const out = Buffer.alloc(2 + b.length);
  out.writeUInt16BE(b.length, 0);
  b.copy(out, 2);
  return out;
}

export function connectPacket(clientId: string, username: string | null, password: string | null, keepaliveSeconds: number): Buffer {
  let flags = 0x02; // clean session
  if (username !== null) flags |= 0x80;
  if (password !== null) flags |= 0x40;
  const head = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, flags, keepaliveSeconds >> 8, keepaliveSeconds & 0xff]);
  const parts = [head, str(clientId)];
  if (username !== null) parts.push(str(username));
  if (password !== null) parts.push(str(password));
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([0x10, ...varLength(body.length)]), body]);
}

/** A PUBLISH; `dup` marks a retransmit of a QoS 1 or 2 message [MQTT-3.3.1-1]. */
export function publishPacket(topic: string, payload: Buffer | string, qos: 0 | 1 | 2, messageId = 1, dup = false): Buffer {
  const parts = [str(topic)];
  if (qos > 0) parts.push(Buffer.from([messageId >> 8, messageId & 0xff]));
  parts.push(Buffer.from(payload));
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([0x30 | (dup ? 0x08 : 0) | (qos << 1), ...varLength(body.length)]), body]);
}

/** PUBREL, the second step of a QoS 2 exchange [MQTT-3.6.1-1]. */
export function pubrelPacket(messageId: number): Buffer {
  return Buffer.from([0x62, 0x02, messageId >> 8, messageId & 0xff]);
}

export interface Incoming { type: number; body: Buffer }

/** Every packet `socket` receives from now on, as they arrive (type = first byte >> 4). */
export function collectPackets(socket: { on(event: 'data', fn: (d: Buffer) => void): unknown }): Incoming[] {
  const out: Incoming[] = [];
  const reader = new PacketReader();
  socket.on('data', (d: Buffer) => { out.push(...reader.push(d)); });
  return out;
}

/** Splits a byte stream into MQTT packets. */
export class PacketReader {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Incoming[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Incoming[] = [];
    for (;;) {
      if (this.buf.length < 2) break;
      let len = 0;
      let mul = 1;
      let i = 1;
      let complete = false;
      while (i < this.buf.length && i <= 4) {
        const b = this.buf[i++];
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) { complete = true; break; }
      }
      if (!complete || this.buf.length < i + len) break;
      out.push({ type: this.buf[0] >> 4, body: this.buf.subarray(i, i + len) });
      this.buf = this.buf.subarray(i + len);
    }
    return out;
  }
}

export const CONNACK = 2;
export const PUBACK = 4;
export const PUBREC = 5;
export const PUBCOMP = 7;
