// One WebSocket to /v1/ws (docs/protocol.md): requests carry an `id` and get
// exactly one reply; everything else is a push handed to `onPush`.

export type Frame = { type: string; [k: string]: any };

/** An `error` frame answered to a request. */
export class ServerError extends Error {
  constructor(readonly code: string, message: string, readonly frame: Frame) {
    super(`${code}: ${message}`);
  }
}

type Waiter = { resolve: (f: Frame) => void; reject: (e: Error) => void };

export class Conn {
  private nextId = 1;
  private waiting = new Map<number, Waiter>();
  private ping: number | undefined;
  onPush: (f: Frame) => void = () => {};
  onClose: (code: number) => void = () => {};

  private constructor(private ws: WebSocket, readonly hello: Frame) {
    ws.onmessage = (ev) => this.receive(String(ev.data));
    ws.onclose = (ev) => this.closed(ev.code);
    // Well within idle_timeout_ms: any frame counts as activity.
    const every = Math.max(5000, Math.floor((hello.idle_timeout_ms ?? 120000) / 3));
    this.ping = window.setInterval(() => {
      this.request({ type: 'ping' }).catch(() => {});
    }, every);
  }

  /** Opens the socket and waits for the server's `hello`. */
  static open(url: string): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onerror = () => reject(new Error('cannot reach the server'));
      ws.onclose = () => reject(new Error('the server closed the connection'));
      ws.onmessage = (ev) => {
        const f = JSON.parse(String(ev.data)) as Frame;
        if (f.type === 'hello') resolve(new Conn(ws, f));
        else reject(new Error(`expected hello, got ${f.type}`));
      };
    });
  }

  static defaultUrl(): string {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    return `${scheme}://${location.host}/v1/ws`;
  }

  request(frame: Frame): Promise<Frame> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error('not connected'));
        return;
      }
      this.waiting.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** A frame without a reply (`ack`, `typing`). */
  send(frame: Frame) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  close() {
    this.ws.close(1000);
  }

  private receive(text: string) {
    let f: Frame;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    const w = typeof f.id === 'number' ? this.waiting.get(f.id) : undefined;
    if (w) {
      this.waiting.delete(f.id);
      if (f.type === 'error') w.reject(new ServerError(f.code, f.message, f));
      else w.resolve(f);
      return;
    }
    this.onPush(f);
  }

  private closed(code: number) {
    window.clearInterval(this.ping);
    for (const w of this.waiting.values()) w.reject(new Error('connection closed'));
    this.waiting.clear();
    this.onClose(code);
  }
}
