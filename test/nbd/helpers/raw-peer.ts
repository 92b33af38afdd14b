// A raw NBD peer over a real socket for hostile-client tests: sends arbitrary bytes, decodes
// what the server answers with the client decoder, and notices when the server hangs up.
import net from 'node:net';
import { ClientDecoder } from '../../../src/nbd/client-decoder.js';
import * as codec from '../../../src/nbd/codec.js';
import * as C from '../../../src/nbd/constants.js';

export class RawPeer {
  readonly socket: net.Socket;
  readonly decoder: ClientDecoder;
  readonly reads = new Map<bigint, number>();
  #messages: codec.ServerMessage[] = [];
  #waiters: Array<() => void> = [];
  #closed = false;
  error: unknown;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.decoder = new ClientDecoder({ simpleReplyLength: (c) => this.reads.get(c) ?? 0 });
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const m of this.decoder.feed(chunk)) this.#messages.push(m);
      } catch (err) {
        this.error = err;
      }
      this.#wake();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
  }

  static connect(port: number): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  #wake(): void {
    this.#waiters.splice(0).forEach((w) => w());
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  send(...bufs: Buffer[]): void {
    for (const b of bufs) this.socket.write(b);
  }

  /** Next decoded message; undefined if the server closed first. */
  async next(timeoutMs = 3000): Promise<codec.ServerMessage | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.#messages.length === 0) {
      if (this.#closed) return undefined;
      if (Date.now() > deadline) throw new Error('timed out waiting for a message');
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    return this.#messages.shift();
  }

  /** Resolves true once the server has closed the connection (false on timeout). */
  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    return this.#closed;
  }

  /** Greeting + client flags. */
  async hello(flags = C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES): Promise<void> {
    const g = await this.next();
    if (g?.type !== 'greeting') throw new Error('no greeting');
    this.send(codec.encodeClientFlags(flags));
  }

  /** Read option replies up to the final one (ACK or error); returns them all. */
  async optionReplies(): Promise<Extract<codec.ServerMessage, { type: 'optionReply' }>[]> {
    const out: Extract<codec.ServerMessage, { type: 'optionReply' }>[] = [];
    for (;;) {
      const m = await this.next();
      if (!m) throw new Error('closed during options');
      if (m.type !== 'optionReply') throw new Error(`unexpected ${m.type}`);
      out.push(m);
      if (m.replyType === C.NBD_REP_ACK || (m.replyType & C.NBD_REP_FLAG_ERROR) !== 0) return out;
    }
  }

  /** hello, SR, SET_META_CONTEXT base:allocation, GO: ready for requests. */
  async enter(name = 'disk', sr = true): Promise<void> {
    await this.hello();
    if (sr) {
      this.send(codec.encodeOption(C.NBD_OPT_STRUCTURED_REPLY));
      await this.optionReplies();
      this.send(codec.encodeMetaContextRequest(C.NBD_OPT_SET_META_CONTEXT, name, ['base:allocation']));
      await this.optionReplies();
    }
    this.send(codec.encodeInfoRequest(C.NBD_OPT_GO, name, []));
    const replies = await this.optionReplies();
    if (replies[replies.length - 1]!.replyType !== C.NBD_REP_ACK) throw new Error('GO refused');
    this.decoder.enterTransmission(sr);
  }

  request(command: number, cookie: bigint, offset: number, length: number, flags = 0, data?: Buffer): void {
    if (command === C.NBD_CMD_READ) this.reads.set(cookie, length);
    this.send(codec.encodeRequest({ flags, command, cookie, offset, length }), ...(data ? [data] : []));
  }

  /** Wait for the final reply to cookie: the errno (0 = ok) and any read data. */
  async reply(cookie: bigint): Promise<{ error: number; data?: Buffer }> {
    let data: Buffer | undefined;
    for (;;) {
      const m = await this.next();
      if (!m) throw new Error(`closed before the reply to ${cookie}`);
      if (m.type === 'simpleReply' && m.cookie === cookie) return { error: m.error, data: m.data };
      if (m.type === 'chunk' && m.cookie === cookie) {
        if (m.body.kind === 'data') data = m.body.data;
        if (m.body.kind === 'error') return { error: m.body.error };
        if (m.done) return { error: 0, data };
      }
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}
