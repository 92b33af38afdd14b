// A scripted QMP server on a Unix socket, for tests of the QMP client and of what the adapters send (no QEMU).
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const GREETING = { QMP: { version: { qemu: { micro: 0, minor: 2, major: 7 } }, capabilities: ['oob'] } };

export interface QmpCommand {
  execute: string;
  id: number;
  arguments?: unknown;
}

let servers: Server[] = [];
let dirs: string[] = [];

/** For afterEach: closes every fake server and removes its directory. */
export function closeFakeQmps(): void {
  for (const s of servers) s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  servers = [];
  dirs = [];
}

/** A QMP server that greets, accepts qmp_capabilities, and hands every later command to `onCommand`. */
export async function fakeQmp(onCommand: (cmd: QmpCommand, sock: Socket) => void, greet = true): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'pc-qmp-'));
  dirs.push(dir);
  const path = join(dir, 'qmp.sock');
  const server = createServer((sock) => {
    sock.on('error', () => {}); // the client may cut us off (that is the point of some tests)
    if (greet) sock.write(JSON.stringify(GREETING) + '\r\n');
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as QmpCommand;
        buf = buf.slice(nl + 1);
        if (cmd.execute === 'qmp_capabilities') sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n');
        else onCommand(cmd, sock);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, () => r()));
  return path;
}

/** Reply to a command (with `return`, or `error` when `error` is given). */
export function reply(sock: Socket, id: number, value: unknown = {}, error?: string): void {
  sock.write(JSON.stringify(error ? { error: { class: 'GenericError', desc: error }, id } : { return: value, id }) + '\r\n');
}

/** An asynchronous event, time-stamped now. */
export function sendEvent(sock: Socket, event: string, data: Record<string, unknown>): void {
  const now = Date.now();
  sock.write(JSON.stringify({ event, data, timestamp: { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 } }) + '\r\n');
}
