// Server-Sent Events over fetch, so the console's live views send the token in the
// `Authorization` header as every other request does. A browser's EventSource cannot set
// headers, and a token in the URL ends up in the access logs of any proxy in front of the node.
// The object looks like an EventSource to the pages (open / error / named events, readyState,
// close) and reconnects the same way: after the server's `retry` (or 2 s), resuming with
// `Last-Event-ID` so no change is missed across a dropped connection.

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;
const DEFAULT_RETRY_MS = 2000;

export class TokenStream extends EventTarget {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSED = CLOSED;

  /**
   * `headers()` is called at every (re)connection, so a token changed meanwhile is used;
   * `onUnauthorized(status)` hears a 401, after which the stream stays closed.
   */
  constructor(url, { headers = () => ({}), onUnauthorized = () => {} } = {}) {
    super();
    this.url = url;
    this.headers = headers;
    this.onUnauthorized = onUnauthorized;
    this.readyState = CONNECTING;
    this.lastEventId = '';
    this.retryMs = DEFAULT_RETRY_MS;
    this.abort = null;
    this.timer = null;
    this.connect();
  }

  close() {
    this.readyState = CLOSED;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.abort) this.abort.abort();
    this.abort = null;
  }

  async connect() {
    if (this.readyState === CLOSED) return;
    this.readyState = CONNECTING;
    const abort = new AbortController();
    this.abort = abort;
    const h = { Accept: 'text/event-stream', ...this.headers() };
    if (this.lastEventId) h['Last-Event-ID'] = this.lastEventId;
    let res;
    try {
      res = await fetch(this.url, { headers: h, cache: 'no-store', signal: abort.signal });
    } catch {
      return this.dropped();
    }
    if (!res.ok || !(res.headers.get('content-type') || '').startsWith('text/event-stream')) {
      // A refusal is an answer, not a blip: retrying would repeat it (as EventSource does too).
      if (res.status === 401) this.onUnauthorized(res.status);
      this.status = res.status;
      return this.fail();
    }
    this.readyState = OPEN;
    this.dispatchEvent(new Event('open'));
    try {
      await this.read(res.body.pipeThrough(new TextDecoderStream()).getReader());
    } catch {
      // Aborted or cut: handled below like an end of stream.
    }
    this.dropped();
  }

  /** Parses the stream line by line (the text/event-stream format) and dispatches each event. */
  async read(reader) {
    let buf = '';
    let event = { type: '', data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.readyState === CLOSED) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        // A CR that ends the chunk may be the first half of a CRLF: wait for the next chunk.
        if (nl === buf.length - 1 && buf[nl] === '\r') break;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
        if (line === '') {
          this.deliver(event);
          event = { type: '', data: [], id: null };
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'data') event.data.push(v);
        else if (field === 'event') event.type = v;
        else if (field === 'id' && !v.includes('\0')) event.id = v;
        else if (field === 'retry' && /^\d+$/.test(v)) this.retryMs = Number(v);
      }
    }
  }

  deliver(event) {
    if (event.id !== null) this.lastEventId = event.id;
    if (!event.data.length || this.readyState === CLOSED) return;
    const ev = new MessageEvent(event.type || 'message', {
      data: event.data.join('\n'),
      lastEventId: this.lastEventId,
    });
    this.dispatchEvent(ev);
  }

  /** The connection ended or never opened: tell the page, and try again after the retry delay. */
  dropped() {
    if (this.readyState === CLOSED) return;
    this.readyState = CONNECTING;
    this.dispatchEvent(new Event('error'));
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, this.retryMs);
  }

  fail() {
    this.readyState = CLOSED;
    this.dispatchEvent(new Event('error'));
  }
}
