// A TCP relay in front of D that passes the client's (S's) bytes at `bytesPerSec` at most, so a test's post-copy
// lasts long enough for what it does meanwhile (a kill at a given fraction, a second source). D's replies pass freely.
import { connect, createServer, type Socket } from 'node:net';

export async function throttledRelay(target: number, bytesPerSec: number): Promise<{ port: number; close: () => void; setRate: (bytesPerSec: number) => void }> {
  const sockets = new Set<Socket>();
  const server = createServer((down) => {
    const up = connect(target, '127.0.0.1');
    for (const s of [down, up]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => (down.destroy(), up.destroy()));
    }
    up.pipe(down);
    down.on('data', (chunk: Buffer) => {
      up.write(chunk);
      down.pause();
      setTimeout(() => down.resume(), Number.isFinite(bytesPerSec) ? (chunk.length / bytesPerSec) * 1000 : 0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    /** From now on (Infinity: no cap). */
    setRate: (rate: number) => {
      bytesPerSec = rate;
    },
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
