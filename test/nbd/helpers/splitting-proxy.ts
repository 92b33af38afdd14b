// A TCP proxy that re-cuts the byte stream both ways into pieces of pseudo-random size (seeded),
// each written separately with a tick between: every decoder split point gets exercised over
// real sockets, undici-fuzzing style.
import net from 'node:net';

/** mulberry32: small deterministic PRNG so a failing seed replays the same cuts. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class SplittingProxy {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  port = 0;

  private constructor(targetPort: number, seed: number, maxPiece: number) {
    const rand = prng(seed);
    this.#server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
      client.setNoDelay(true);
      upstream.setNoDelay(true);
      this.#sockets.add(client).add(upstream);
      const relay = (from: net.Socket, to: net.Socket): void => {
        // One queue per direction keeps order while pieces go out a tick apart.
        let queue = Promise.resolve();
        from.on('data', (chunk: Buffer) => {
          from.pause();
          queue = queue.then(async () => {
            for (let at = 0; at < chunk.length; ) {
              const n = Math.max(1, Math.floor(rand() * maxPiece));
              if (to.destroyed) return;
              to.write(chunk.subarray(at, at + n));
              at += n;
              if (rand() < 0.3) await new Promise((r) => setImmediate(r));
            }
            from.resume();
          });
        });
        from.on('end', () => void queue.then(() => to.end()));
      };
      relay(client, upstream);
      relay(upstream, client);
      const drop = (): void => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', drop).on('close', () => this.#sockets.delete(client));
      upstream.on('error', drop).on('close', () => this.#sockets.delete(upstream));
    });
  }

  static async start(targetPort: number, seed: number, maxPiece = 97): Promise<SplittingProxy> {
    const p = new SplittingProxy(targetPort, seed, maxPiece);
    await new Promise<void>((resolve) => p.#server.listen(0, '127.0.0.1', () => resolve()));
    p.port = (p.#server.address() as net.AddressInfo).port;
    return p;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
