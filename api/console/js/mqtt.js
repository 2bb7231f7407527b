// A small MQTT 3.1.1 client over WebSocket for the console's subscribe tool: CONNECT with
// credentials, SUBSCRIBE, receiving PUBLISH at QoS 0/1/2 (acknowledged as the protocol asks),
// keepalive pings and DISCONNECT. The console has no build step and no package registry, so it
// carries this rather than a library.

const enc = new TextEncoder();

function str(s) {
  const b = enc.encode(s);
  return [b.length >> 8, b.length & 0xff, ...b];
}

function packet(type, body) {
  const len = [];
  let n = body.length;
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    len.push(byte);
  } while (n > 0);
  return new Uint8Array([type, ...len, ...body]);
}

const CONNACK_ERRORS = {
  1: 'unacceptable protocol version',
  2: 'client identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized',
};

export class MqttClient {
  /**
   * `handlers`: `onMessage(topic, payloadBytes, {qos, retain})`, `onClose(reason)`.
   * Resolves once the broker accepted the connection.
   */
  static connect(url, {clientId, username, password, keepalive = 60}, handlers) {
    const c = new MqttClient(handlers);
    return c.open(url, {clientId, username, password, keepalive});
  }

  constructor(handlers) {
    this.handlers = handlers;
    this.buf = new Uint8Array(0);
    this.nextId = 1;
    this.pending = new Map();
    // Inbound QoS 2 ids between PUBLISH and PUBREL: a resent PUBLISH is not shown twice.
    this.qos2 = new Set();
    this.closed = false;
  }

  open(url, o) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, 'mqtt');
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      this.onConnack = (rc) => {
        if (rc === 0) {
          this.ping = setInterval(() => this.send(new Uint8Array([0xc0, 0])), (o.keepalive * 1000) / 2);
          resolve(this);
        } else {
          const e = new Error(`connection refused: ${CONNACK_ERRORS[rc] || `code ${rc}`}`);
          e.refused = rc;
          reject(e);
          ws.close();
        }
      };
      ws.onopen = () => {
        let flags = 0x02; // clean session: the tool's subscriptions end with the page
        const payload = [...str(o.clientId)];
        if (o.username) {
          flags |= 0x80;
          payload.push(...str(o.username));
          if (o.password) {
            flags |= 0x40;
            payload.push(...str(o.password));
          }
        }
        const head = [...str('MQTT'), 4, flags, o.keepalive >> 8, o.keepalive & 0xff];
        this.send(packet(0x10, [...head, ...payload]));
      };
      ws.onmessage = (ev) => this.receive(new Uint8Array(ev.data));
      ws.onerror = () => reject(new Error(`cannot reach ${url}`));
      ws.onclose = (ev) => {
        clearInterval(this.ping);
        const reason = ev.reason || `connection closed (${ev.code})`;
        reject(new Error(reason));
        for (const [, p] of this.pending) p.reject(new Error(reason));
        this.pending.clear();
        if (!this.closed) this.handlers.onClose?.(reason);
        this.closed = true;
      };
    });
  }

  send(bytes) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  /** Resolves with the granted QoS, or rejects when the broker refused the filter. */
  subscribe(filter, qos) {
    const id = this.id();
    this.send(packet(0x82, [id >> 8, id & 0xff, ...str(filter), qos]));
    return new Promise((resolve, reject) => this.pending.set(id, {resolve, reject}));
  }

  disconnect() {
    this.closed = true;
    this.send(new Uint8Array([0xe0, 0]));
    this.ws.close();
  }

  id() {
    const id = this.nextId;
    this.nextId = (this.nextId % 65535) + 1;
    return id;
  }

  /** Frames may split or join packets: keep what is left over for the next frame. */
  receive(chunk) {
    const all = new Uint8Array(this.buf.length + chunk.length);
    all.set(this.buf);
    all.set(chunk, this.buf.length);
    let at = 0;
    for (;;) {
      let len = 0;
      let mult = 1;
      let i = at + 1;
      let complete = false;
      while (i < all.length && i < at + 5) {
        const b = all[i++];
        len += (b & 0x7f) * mult;
        mult *= 128;
        if (!(b & 0x80)) {
          complete = true;
          break;
        }
      }
      if (!complete || i + len > all.length) break;
      this.handle(all[at], all.subarray(i, i + len));
      at = i + len;
    }
    this.buf = all.slice(at);
  }

  handle(first, body) {
    const type = first >> 4;
    const u16 = (o) => (body[o] << 8) | body[o + 1];
    if (type === 2) {
      this.onConnack(body[1]);
    } else if (type === 3) {
      const qos = (first >> 1) & 3;
      const tlen = u16(0);
      const topic = new TextDecoder().decode(body.subarray(2, 2 + tlen));
      let at = 2 + tlen;
      let id = 0;
      if (qos > 0) {
        id = u16(at);
        at += 2;
      }
      const dup = qos === 2 && this.qos2.has(id);
      if (qos === 2) this.qos2.add(id);
      if (!dup) this.handlers.onMessage?.(topic, body.slice(at), {qos, retain: !!(first & 1)});
      if (qos === 1) this.send(new Uint8Array([0x40, 2, id >> 8, id & 0xff]));
      if (qos === 2) this.send(new Uint8Array([0x50, 2, id >> 8, id & 0xff]));
    } else if (type === 6) {
      // PUBREL of an inbound QoS 2 message: complete it.
      this.qos2.delete(u16(0));
      this.send(new Uint8Array([0x70, 2, body[0], body[1]]));
    } else if (type === 9) {
      const p = this.pending.get(u16(0));
      this.pending.delete(u16(0));
      const rc = body[2];
      if (rc === 0x80) p?.reject(new Error('subscription refused by the broker'));
      else p?.resolve(rc);
    }
  }
}
