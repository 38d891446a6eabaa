/**
 * A device's telemetry PUBLISHes read straight from the socket's chunk: mqtt-packet's parser
 * gathers every chunk in a byte list and walks each packet through four states (header, length,
 * payload, new packet), with views of the list taken and dropped at each step, a topic string made
 * per message and a dozen `debug` calls (~1.5 us of the main thread a message at QoS 1,
 * docs/benchmarks.md, 2026-12-06 session 8). Here the complete PUBLISHes at the head of a chunk whose topic
 * is one given topic (the device's own telemetry topic) and whose QoS is 0 or 1 are read in one
 * pass and emitted as the parser would emit them (the same fields and values; the topic is the
 * given string, the payload a view of the chunk, as the parser's is). Anything else, from the first
 * byte that is not such a packet to the chunk's end (another packet, a partial packet, a length
 * over the limit, a malformed header, MQTT 5), is handed to the parser itself, as are whole chunks
 * while it is inside a packet (bytes of its own, or a header and length read with the body still
 * to come) or holds an error: so what it answers, errors and limits included, is unchanged.
 */

/** What of mqtt-packet's Parser this uses. */
export interface PacketParser {
  parse(buf: Buffer): number;
  emit(event: 'packet', packet: unknown): boolean;
  _list: { length: number };
  /** The parser's state: 0 before a packet's first byte (its header, length and body may be consumed from `_list` before the packet is whole). */
  _stateCounter: number;
  error: Error | null;
}

/** The packet the parser emits for a PUBLISH of MQTT 3.1 / 3.1.1 (mqtt-packet packet.js and _parsePublish). */
export interface FastPublishPacket {
  cmd: 'publish';
  retain: boolean;
  qos: 0 | 1;
  dup: boolean;
  length: number;
  topic: string;
  payload: Buffer;
  messageId?: number;
}

export interface FastTopic {
  text: string;
  /** `text` in UTF-8. */
  bytes: Buffer;
}

/**
 * Read the PUBLISHes to `topic()` at the head of each chunk `parser.parse` is given; `topic()`
 * is asked before each packet, null: none now (the parser reads the rest). Packets whose
 * remaining length is over `maxPacketBytes` go to the parser (limits.ts refuses them there).
 */
export function fastPublish(parser: PacketParser, maxPacketBytes: number, topic: () => FastTopic | null): void {
  const parse = parser.parse;
  parser.parse = function fastParse(this: PacketParser, buf: Buffer): number {
    // Mid-packet (bytes held, or the header and length already consumed: `_list` empty but the
    // state past the header), the chunk continues that packet: the parser's.
    if (this._list.length !== 0 || this._stateCounter !== 0 || this.error) return parse.call(this, buf);
    const end = buf.length;
    let i = 0;
    while (i < end) {
      const b0 = buf[i];
      // PUBLISH (type 3), QoS 0 or 1.
      if (b0 >> 4 !== 3 || (b0 & 0x04) !== 0) break;
      const t = topic();
      if (t === null) break;
      // Remaining length: a variable byte integer of at most 4 bytes.
      let len = 0;
      let mul = 1;
      let j = i + 1;
      let done = false;
      for (let k = 0; k < 4 && j < end; k++) {
        const d = buf[j++];
        len += (d & 0x7f) * mul;
        mul *= 0x80;
        if ((d & 0x80) === 0) { done = true; break; }
      }
      if (!done || len > maxPacketBytes || j + len > end) break;
      const qos = (b0 >> 1) & 1;
      const tb = t.bytes;
      const tlen = tb.length;
      const stop = j + len;
      let p = j + 2;
      // The topic (a 2-byte length, then its bytes), the packet id at QoS 1, then at least nothing.
      if (p + tlen + 2 * qos > stop || ((buf[j] << 8) | buf[j + 1]) !== tlen) break;
      let same = true;
      for (let k = 0; k < tlen; k++) {
        if (buf[p + k] !== tb[k]) { same = false; break; }
      }
      if (!same) break;
      p += tlen;
      const packet: FastPublishPacket = { cmd: 'publish', retain: (b0 & 1) !== 0, qos: qos as 0 | 1, dup: (b0 & 0x08) !== 0, length: len, topic: t.text, payload: buf };
      if (qos === 1) {
        packet.messageId = (buf[p] << 8) | buf[p + 1];
        p += 2;
      }
      packet.payload = buf.subarray(p, stop);
      i = stop;
      this.emit('packet', packet);
    }
    if (i === end) return 0;
    return parse.call(this, i === 0 ? buf : buf.subarray(i));
  };
}
