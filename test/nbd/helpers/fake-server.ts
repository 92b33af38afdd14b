// A scriptable, deliberately misbehaving NBD server for client tests: default answers for the
// handshake, overridable per option; requests handed to the test to answer however it likes.
import net from 'node:net';
import * as codec from '../../../src/nbd/codec.js';
import type { NbdRequest } from '../../../src/nbd/codec.js';
import * as C from '../../../src/nbd/constants.js';
import { ServerDecoder } from '../../../src/nbd/server-decoder.js';

export const FAKE_CONTEXT_ID = 7;

export interface FakeConn {
  send(...bufs: Buffer[]): void;
  close(): void;
  /** Negotiated: the client asked for structured replies. */
  structured: boolean;
}

export interface FakeScript {
  size?: number;
  greetingFlags?: number;
  tflags?: number;
  /** Return replies (and whether transmission starts) to override the default for this option. */
  onOption?: (option: number, data: Buffer, conn: FakeConn) => { replies: Buffer[]; enter?: boolean } | undefined;
  onRequest?: (req: NbdRequest, conn: FakeConn) => void;
}

export class FakeNbdServer {
  readonly #server: net.Server;
  readonly options: number[] = [];
  readonly requests: NbdRequest[] = [];
  port = 0;

  private constructor(script: FakeScript) {
    this.#server = net.createServer((socket) => this.#serve(socket, script));
  }

  static async start(script: FakeScript): Promise<FakeNbdServer> {
    const s = new FakeNbdServer(script);
    await new Promise<void>((resolve) => s.#server.listen(0, '127.0.0.1', () => resolve()));
    s.port = (s.#server.address() as net.AddressInfo).port;
    return s;
  }

  get uri(): string {
    return `nbd://127.0.0.1:${this.port}/disk`;
  }

  #serve(socket: net.Socket, script: FakeScript): void {
    const size = script.size ?? 1024 * 1024;
    const tflags = script.tflags ?? C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_WRITE_ZEROES;
    const decoder = new ServerDecoder();
    let noZeroes = false;
    const conn: FakeConn = {
      send: (...bufs) => {
        if (!socket.destroyed) for (const b of bufs) socket.write(b);
      },
      close: () => socket.destroy(),
      structured: false,
    };
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.write(codec.encodeGreeting(script.greetingFlags ?? C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES));
    socket.on('data', (chunk: Buffer) => {
      try {
        decoder.push(chunk);
        for (let m = decoder.next(); m; m = decoder.next()) {
          if (m.type === 'clientFlags') noZeroes = (m.flags & C.NBD_FLAG_C_NO_ZEROES) !== 0;
          else if (m.type === 'option') {
            this.options.push(m.option);
            const custom = script.onOption?.(m.option, m.data, conn);
            const outcome = custom ?? this.#defaultOption(m.option, size, tflags, noZeroes, conn);
            conn.send(...outcome.replies);
            if (outcome.enter) decoder.enterTransmission();
          } else {
            this.requests.push(m);
            if (m.command === C.NBD_CMD_DISC) socket.end();
            else script.onRequest?.(m, conn);
          }
        }
      } catch {
        socket.destroy();
      }
    });
  }

  #defaultOption(option: number, size: number, tflags: number, noZeroes: boolean, conn: FakeConn): { replies: Buffer[]; enter?: boolean } {
    switch (option) {
      case C.NBD_OPT_STRUCTURED_REPLY:
        conn.structured = true;
        return { replies: [codec.encodeAck(option)] };
      case C.NBD_OPT_SET_META_CONTEXT:
        return { replies: [codec.encodeRepMetaContext(option, FAKE_CONTEXT_ID, 'base:allocation'), codec.encodeAck(option)] };
      case C.NBD_OPT_GO:
        return { replies: [codec.encodeInfoExport(option, size, tflags), codec.encodeAck(option)], enter: true };
      case C.NBD_OPT_EXPORT_NAME:
        return { replies: [codec.encodeExportNameReply(size, tflags, noZeroes)], enter: true };
      default:
        return { replies: [codec.encodeOptionError(option, C.NBD_REP_ERR_UNSUP)] };
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
