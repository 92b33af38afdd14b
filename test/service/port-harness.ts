// Dest jobs behind one SharedMigrationPort, and real sources that reach them through a relay the test can cut:
// what the port tests build their migrations from (real agents, real TCP on loopback).
import { mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nullEvents } from '../../src/common/events.js';
import { DestAgent, type DestResult } from '../../src/dest/dest-agent.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { FileImage } from '../../src/image/file-image.js';
import { loadTlsFiles, type Endpoint, type TlsFiles } from '../../src/link/connect.js';
import { parseTicket, ticketId, type Ticket } from '../../src/protocol/handshake.js';
import { SharedMigrationPort } from '../../src/service/migration-port.js';
import { SourceAgent, type SourceResult } from '../../src/source/source-agent.js';
import { captureLogger } from '../guest/helpers/capture-logger.js';
import { LINK_OPTS, MiB, RecordingEvents, WatchedImage, decodeAll, type LogLines } from '../hostile/hostile-harness.js';

export const IMAGE_BYTES = 2 * MiB;

/** A port on 127.0.0.1:0 with its log lines and refusal events recorded. */
export async function startPort(extra: { tls?: TlsFiles } = {}): Promise<{ port: SharedMigrationPort; endpoint: Endpoint; lines: LogLines; events: RecordingEvents }> {
  const { log, lines } = captureLogger('info');
  const events = new RecordingEvents();
  const port = new SharedMigrationPort({ listen: { host: '127.0.0.1', port: 0 }, log, events, handshakeTimeoutMs: LINK_OPTS.handshakeTimeoutMs, ...extra });
  const endpoint = await port.listen();
  return { port, endpoint, lines, events };
}

export function newTicket(name: string): Ticket {
  return parseTicket(`port-test-ticket-${name}-0123456789abcdef`);
}

/** One dest job on the port: a real DestAgent whose listener is the port's, with its own ticket and files. */
export interface PortJob {
  name: string;
  ticket: Ticket;
  dir: string;
  src: string;
  dst: string;
  dest: DestAgent;
  cleanup(): Promise<void>;
}

export async function startJob(port: SharedMigrationPort, name: string, seed: number): Promise<PortJob> {
  const dir = mkdtempSync(join(tmpdir(), `pc-port-${name}-`));
  const src = join(dir, 'src.img');
  const dst = join(dir, 'dst.img');
  generateDemoImage(src, IMAGE_BYTES, seed);
  const ticket = newTicket(name);
  const { log } = captureLogger('silent');
  const dest = new DestAgent({
    // Ignored behind a shared port (the port is bound already); the agent's options need one.
    listen: { host: '127.0.0.1', port: 0 },
    listener: port.listenerFor(ticketId(ticket)),
    imagePath: dst,
    stateDir: join(dir, 'dstate'),
    ticket,
    log,
    events: nullEvents,
    link: LINK_OPTS,
    abortGraceMs: 200,
    confirmGraceMs: 500,
  });
  await dest.start();
  dest.done.catch(() => {});
  return {
    name,
    ticket,
    dir,
    src,
    dst,
    dest,
    async cleanup() {
      await dest.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A real source (no guest) of `job`'s image, connecting to `ep`; `image` lets a test hold its reads. */
export function sourceFor(
  job: PortJob,
  ep: Endpoint,
  image: WatchedImage = new WatchedImage(FileImage.open(job.src)),
  tls?: TlsFiles,
): { run: Promise<SourceResult>; image: WatchedImage } {
  const { log } = captureLogger('silent');
  const agent = new SourceAgent({
    connect: ep,
    image,
    guest: null,
    guestDefinition: null,
    ticket: job.ticket,
    blockSize: 64 * 1024,
    maxDowntimeMs: 50,
    connectTimeoutMs: 5000,
    log,
    events: nullEvents,
    link: LINK_OPTS,
    ...(tls ? { tls } : {}),
  });
  const run = agent.run();
  run.catch(() => {});
  return { run, image };
}

/** Both sides' outcomes and whether D's image equals S's, byte for byte. */
export async function finished(job: PortJob, run: Promise<SourceResult>): Promise<{ source: SourceResult; dest: DestResult; identical: boolean }> {
  const [source, dest] = await Promise.all([run, job.dest.done]);
  const cmp = await compareImages(job.src, job.dst);
  return { source, dest, identical: cmp.ok };
}

/** A TCP relay in front of `target` that records what S sends on each connection and can cut them all. */
export class CuttableRelay {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly upstream: Buffer[][] = [];
  constructor(target: Endpoint) {
    this.#server = createServer((client) => {
      const n = this.upstream.length;
      this.upstream.push([]);
      const server = connect(target.port, target.host);
      for (const s of [client, server]) {
        this.#sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          this.#sockets.delete(s);
          client.destroy();
          server.destroy();
        });
      }
      client.on('data', (c: Buffer) => {
        this.upstream[n]!.push(Buffer.from(c));
        server.write(c);
      });
      server.on('data', (c: Buffer) => client.write(c));
    });
  }
  async listen(): Promise<Endpoint> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    const { port } = this.#server.address() as { port: number };
    return { host: '127.0.0.1', port };
  }
  get connections(): number {
    return this.upstream.length;
  }
  /** The first message S sent on connection n. */
  firstUp(n: number) {
    return decodeAll(Buffer.concat(this.upstream[n] ?? []))[0];
  }
  /** Cut every connection through the relay (new ones are still taken). */
  cut(): void {
    for (const s of this.#sockets) s.destroy();
  }
  close(): void {
    this.#server.close();
    this.cut();
  }
}

/** A CA and two leaves it signed, made with openssl in `dir`: the port's (for 127.0.0.1) and a source's (a client). */
export function portPki(dir: string): { port: TlsFiles; source: TlsFiles } {
  const script = `
    set -e
    key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "$@" 2>/dev/null; }
    key -x509 -keyout ca.key -out ca.crt -subj /CN=port-test-ca
    printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > port.ext
    printf 'extendedKeyUsage=clientAuth\\n' > source.ext
    for leaf in port source; do
      key -keyout $leaf.key -out $leaf.csr -subj /CN=$leaf
      openssl x509 -req -in $leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $leaf.crt -days 2 -extfile $leaf.ext 2>/dev/null
    done`;
  execFileSync('sh', ['-c', script], { cwd: dir });
  const files = (leaf: string) => loadTlsFiles(join(dir, `${leaf}.crt`), join(dir, `${leaf}.key`), join(dir, 'ca.crt'))!;
  return { port: files('port'), source: files('source') };
}
