// A sweep of operator mistakes, each run as a real `postcopy` process in a fresh temp dir: the exit code (2 unless the
// row says otherwise), exactly one line on stderr and no stack, no listener ever bound (a probe preloaded into the
// process records every bind), and no file that existed before changed, was deleted, or appeared without leave.
// Adding a mistake is adding one object literal to MISTAKES.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, afterEach, describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';
import { skipWithout } from '../nbd/helpers/tools.js';
import { CLI, letOthersReachCheckout, freePort } from './helpers/processes.js';
import { snapshotTree, treeChanges } from './helpers/tree-snapshot.js';
import { waitUntil } from '../helpers/wait.js';

// Some rows run the CLI as user nobody: it must reach the checkout, wherever it was cloned.
beforeAll(() => letOthersReachCheckout());

/** A file to set up: its content (a string or bytes), or a spec. Paths are relative to the row's temp dir. */
type FileSpec =
  | string
  | Buffer
  | { content?: string | Buffer; mode?: number; owner?: 'nobody' }
  | { dir: true; mode?: number; owner?: 'nobody' }
  | { symlink: string }
  /** A Unix socket another process serves on (this test, for the row's duration). */
  | { serving: true };

interface Mistake {
  /** What the operator did wrong. */
  name: string;
  /** Files to set up besides `ticket` (a good 0600 ticket, always there). */
  files?: Record<string, FileSpec>;
  /**
   * The command line after `postcopy`. Placeholders: {dir} the temp dir, {peerdir} a second one left out of the
   * snapshot, {ticket} its ticket, {port} and {port2} free ports, {busy} a port another process listens on.
   */
  argv: string[];
  /** Expected exit code (2, a mistake, unless documented otherwise). */
  exit?: number;
  /** The one line on stderr matches this. */
  says?: RegExp;
  /** Run as the real second user (the temp dir and the ticket are made theirs to read). */
  user?: 'nobody';
  env?: Record<string, string>;
  /** Paths (relative to the temp dir) the command may create. */
  mayCreate?: string[];
  /**
   * The mistake is in the ports: the command may bind its other ports to check them (the probe sees it), but must
   * release each before it exits. Without this, the command must not bind anything at all.
   */
  portMistake?: true;
  /**
   * A process started first (e.g. a destination for a source row), ready once its stderr matches `ready` (default:
   * a destination's 'listening for the source' log line); killed after the row.
   */
  peer?: { argv: string[]; ready?: RegExp };
}

const TICKET = randomBytes(24).toString('hex') + '\n';
const NOBODY = 65534;
const DEST = ['dest', '--listen', '127.0.0.1:{port}', '--ticket-file', '{ticket}'];
const SOURCE = ['source', '--connect', '127.0.0.1:{port}', '--ticket-file', '{ticket}', '--connect-timeout', '1'];
const SRC_IMAGE = { 'src.img': Buffer.alloc(64 * 1024, 7) };

const MISTAKES: Mistake[] = [
  // Case 9: validate before listening.
  { name: 'dest: --listen port already in use', portMistake: true, argv: ['dest', '--listen', '127.0.0.1:{busy}', '--ticket-file', '{ticket}', '--image', '{dir}/d.img'], says: /--listen 127\.0\.0\.1:\d+: the port is already in use/ },
  { name: 'dest: --nbd-listen port already in use', portMistake: true, argv: [...DEST, '--image', '{dir}/d.img', '--nbd-listen', '127.0.0.1:{busy}'], says: /--nbd-listen .*already in use/ },
  { name: 'dest: --image is a directory', files: { img: { dir: true } }, argv: [...DEST, '--image', '{dir}/img'], says: /--image .*img is a directory/ },
  { name: 'dest: --image in a directory it cannot write', user: 'nobody', files: { ro: { dir: true, mode: 0o755 } }, argv: [...DEST, '--image', '{dir}/ro/d.img'], says: /cannot create files in/ },
  { name: 'dest: --log-level verbose', argv: [...DEST, '--image', '{dir}/d.img', '--log-level', 'verbose'], says: /--log-level: 'verbose' is not a log level/ },
  { name: 'dest: POSTCOPY_LOG_LEVEL=verbose', env: { POSTCOPY_LOG_LEVEL: 'verbose' }, argv: [...DEST, '--image', '{dir}/d.img'], says: /POSTCOPY_LOG_LEVEL/ },
  { name: 'dest: --events in a missing directory', argv: [...DEST, '--image', '{dir}/d.img', '--events', '{dir}/no/ev.jsonl'], says: /--events .*does not exist/ },
  { name: 'dest: --events is a directory', files: { ev: { dir: true } }, argv: [...DEST, '--image', '{dir}/d.img', '--events', '{dir}/ev'], says: /--events .*is a directory/ },
  { name: 'dest: --progress-interval 5', argv: [...DEST, '--image', '{dir}/d.img', '--progress-interval', '5', '--events', '{dir}/ev.jsonl'], mayCreate: ['ev.jsonl'], says: /--progress-interval/ },
  // Others of the same kind.
  { name: 'dest: started twice for one image and port', portMistake: true, peer: { argv: [...DEST, '--image', '{dir}/d.img'] }, argv: [...DEST, '--image', '{dir}/d.img'], says: /--listen .*already in use/ },
  { name: 'dest: ticket file missing', argv: ['dest', '--listen', '127.0.0.1:{port}', '--ticket-file', '{dir}/nope', '--image', '{dir}/d.img'], says: /cannot read ticket file/ },
  { name: 'dest: ticket too short', files: { short: { content: 'abc\n', mode: 0o600 } }, argv: ['dest', '--listen', '127.0.0.1:{port}', '--ticket-file', '{dir}/short', '--image', '{dir}/d.img'], says: /ticket secret must be at least/ },
  { name: 'dest: ticket file is a directory', files: { tdir: { dir: true } }, argv: ['dest', '--listen', '127.0.0.1:{port}', '--ticket-file', '{dir}/tdir', '--image', '{dir}/d.img'], says: /cannot read ticket file/ },
  { name: 'dest: --bulk-window not a size', argv: [...DEST, '--image', '{dir}/d.img', '--bulk-window', 'lots'], says: /--bulk-window/ },
  { name: 'dest: --bulk-window of one byte', argv: [...DEST, '--image', '{dir}/d.img', '--bulk-window', '1'], says: /--bulk-window must be from 4K/ },
  { name: 'dest: --listen on a host that does not exist', argv: ['dest', '--listen', 'no-such-host.invalid:{port}', '--ticket-file', '{ticket}', '--image', '{dir}/d.img'], says: /host name no-such-host\.invalid not found/ },
  { name: 'dest: --listen on an address not of this host', argv: ['dest', '--listen', '192.0.2.1:{port}', '--ticket-file', '{ticket}', '--image', '{dir}/d.img'], says: /not an address of this host/ },
  { name: 'dest: --listen without a port', argv: ['dest', '--listen', '127.0.0.1', '--ticket-file', '{ticket}', '--image', '{dir}/d.img'], says: /--listen must be HOST:PORT/ },
  { name: 'dest: --listen on a privileged port as an unprivileged user', user: 'nobody', portMistake: true, files: { mine: { dir: true, owner: 'nobody' } }, argv: ['dest', '--listen', '127.0.0.1:1', '--ticket-file', '{ticket}', '--image', '{dir}/mine/d.img'], says: /not allowed to listen on port 1/ },
  { name: 'dest: --listen and --nbd-listen on one port', argv: [...DEST, '--image', '{dir}/d.img', '--nbd-listen', '127.0.0.1:{port}'], says: /same port/ },
  { name: 'dest: --final-check bad', argv: [...DEST, '--image', '{dir}/d.img', '--final-check', 'sometimes'], says: /--final-check must be one of/ },
  { name: 'dest: --guest qemu without --qemu-cmd or --qmp', argv: [...DEST, '--image', '{dir}/d.img', '--guest', 'qemu'], says: /--guest qemu needs --qemu-cmd/ },
  { name: "dest: --guest qemu --qmp naming a socket that is not there", argv: [...DEST, '--image', '{dir}/d.img', '--guest', 'qemu', '--qmp', '{dir}/qemu.qmp'], says: /--qmp .*does not exist/ },
  { name: 'dest: --qemu-cmd without --guest qemu', argv: [...DEST, '--image', '{dir}/d.img', '--qemu-cmd', 'qemu-system-x86_64'], says: /go with --guest qemu/ },
  { name: "dest: --image whose parent directory is missing", argv: [...DEST, '--image', '{dir}/missing/d.img'], says: /directory .*missing does not exist/ },
  { name: 'dest: --image is a character device', argv: [...DEST, '--image', '/dev/null'], says: /not a regular file or block device/ },
  { name: 'dest: --image is a symlink to nothing', files: { 'd.img': { symlink: 'gone.img' } }, argv: [...DEST, '--image', '{dir}/d.img'], says: /symbolic link to nothing/ },
  { name: 'dest: --state-dir is a regular file', files: { state: 'not a dir\n' }, argv: [...DEST, '--image', '{dir}/d.img', '--state-dir', '{dir}/state'], says: /--state-dir .*is not a directory/ },
  { name: 'dest: default state dir IMAGE.state is a regular file', files: { 'd.img.state': 'not a dir\n' }, argv: [...DEST, '--image', '{dir}/d.img'], says: /d\.img\.state exists and is not a directory/ },
  { name: 'dest: --nbd-socket names an existing regular file', files: { keep: 'precious\n' }, argv: [...DEST, '--image', '{dir}/d.img', '--nbd-socket', '{dir}/keep'], says: /exists and is not a socket/ },
  { name: 'dest: --nbd-socket another process serves on', files: { 'nbd.sock': { serving: true } }, argv: [...DEST, '--image', '{dir}/d.img', '--nbd-socket', '{dir}/nbd.sock'], says: /--nbd-socket .*another process serves on/ },
  { name: 'dest: --nbd-socket in a missing directory', argv: [...DEST, '--image', '{dir}/d.img', '--nbd-socket', '{dir}/no/nbd.sock'], says: /--nbd-socket .*does not exist/ },
  { name: 'dest: --nbd-socket path too long for a Unix socket', argv: [...DEST, '--image', '{dir}/d.img', '--nbd-socket', `{dir}/${'s'.repeat(120)}`], says: /longer than a Unix socket path/ },
  { name: 'dest: --fallback file missing', argv: [...DEST, '--image', '{dir}/d.img', '--fallback', '{dir}/backup.img'], says: /--fallback .*does not exist/ },
  { name: 'dest: --fallback not an NBD URI', argv: [...DEST, '--image', '{dir}/d.img', '--fallback', 'nbd://[broken'], says: /--fallback/ },
  { name: 'dest: --fallback-after without --fallback', argv: [...DEST, '--image', '{dir}/d.img', '--fallback-after', '5'], says: /--fallback-after goes with --fallback/ },
  { name: 'dest: --confirm-timeout not a number', argv: [...DEST, '--image', '{dir}/d.img', '--confirm-timeout', 'soon'], says: /--confirm-timeout/ },
  { name: 'dest: misspelt option', argv: [...DEST, '--imgae', '{dir}/d.img'], says: /--imgae/ },
  { name: 'dest: --listen missing', argv: ['dest', '--ticket-file', '{ticket}', '--image', '{dir}/d.img'], says: /--listen is required/ },
  { name: 'dest: --tls-cert without its key and CA', files: { 'c.pem': 'x\n' }, argv: [...DEST, '--image', '{dir}/d.img', '--tls-cert', '{dir}/c.pem'], says: /go together/ },
  { name: 'dest: TLS files that are not PEM', files: { 'c.pem': 'x\n', 'k.pem': 'y\n', 'ca.pem': 'z\n' }, argv: [...DEST, '--image', '{dir}/d.img', '--tls-cert', '{dir}/c.pem', '--tls-key', '{dir}/k.pem', '--tls-ca', '{dir}/ca.pem'], says: /not a usable certificate/ },
  // The generic options of source.
  { name: 'source: --log-level verbose', files: SRC_IMAGE, argv: [...SOURCE, '--image', '{dir}/src.img', '--log-level', 'verbose'], says: /--log-level/ },
  { name: 'source: --events in a missing directory', files: SRC_IMAGE, argv: [...SOURCE, '--image', '{dir}/src.img', '--events', '{dir}/no/ev.jsonl'], says: /--events .*does not exist/ },
  { name: 'source: ticket file missing', files: SRC_IMAGE, argv: ['source', '--connect', '127.0.0.1:{port}', '--ticket-file', '{dir}/nope', '--image', '{dir}/src.img'], says: /cannot read ticket file/ },
  { name: 'source: --block-size not a power of two', files: SRC_IMAGE, argv: [...SOURCE, '--image', '{dir}/src.img', '--block-size', '3K'], says: /--block-size must be a power of two/ },
  { name: 'source: --connect without a port', files: SRC_IMAGE, argv: ['source', '--connect', 'localhost', '--ticket-file', '{ticket}', '--image', '{dir}/src.img'], says: /--connect must be HOST:PORT/ },
  { name: 'source: TLS files that are not PEM', files: { ...SRC_IMAGE, 'c.pem': 'x\n', 'k.pem': 'y\n', 'ca.pem': 'z\n' }, argv: [...SOURCE, '--image', '{dir}/src.img', '--tls-cert', '{dir}/c.pem', '--tls-key', '{dir}/k.pem', '--tls-ca', '{dir}/ca.pem'], says: /not a usable certificate/ },
  { name: 'source: --guest bogus', files: SRC_IMAGE, argv: [...SOURCE, '--image', '{dir}/src.img', '--guest', 'bogus'], says: /--guest must be/ },
  // Case 1-3: nothing of the operator's is overwritten, truncated or deleted (a state file's {dir} is the temp dir).
  { name: 'dest: --image exists and holds data, no session owns it', files: { 'd.img': 'precious data\n' }, argv: [...DEST, '--image', '{dir}/d.img'], says: /holds \d+ bytes and no session in the state dir owns it.*--force/ },
  { name: 'dest: --image exists and is the state dir of a finished migration', files: { 'd.img': Buffer.alloc(65536, 3), 'd.img.state/dest-session.json': destSession('confirmed', '{dir}/d.img') }, argv: [...DEST, '--image', '{dir}/d.img'], says: /finished and was confirmed/ },
  { name: 'dest: a rolled-back state dir and a file now at --image', files: { 'd.img': Buffer.alloc(65536, 3), 'd.img.state/dest-session.json': destSession('aborted', '{dir}/d.img') }, argv: [...DEST, '--image', '{dir}/d.img'], says: /was rolled back/ },
  { name: 'dest: --state-dir holds the session of another image', files: { 'st/dest-session.json': destSession('postcopy', '{dir}/other.img') }, argv: [...DEST, '--image', '{dir}/d.img', '--state-dir', '{dir}/st'], says: /of image .*other\.img, not/ },
  { name: "dest: --state-dir is a source's state dir", files: { 'st/source-session.json': '{}\n' }, argv: [...DEST, '--image', '{dir}/d.img', '--state-dir', '{dir}/st'], says: /a source's state directory/ },
  { name: 'dest: the session file is not JSON', files: { 'd.img.state/dest-session.json': 'garbage\n' }, argv: [...DEST, '--image', '{dir}/d.img'], says: /not valid JSON/ },
  // S finds this one only once it reached D, past its info logs: the rows keep logs to errors.
  { name: 'source: D given the same file (one host)', files: SRC_IMAGE, peer: { argv: [...DEST, '--image', '{dir}/src.img', '--force', '--state-dir', '{peerdir}/st'] }, argv: [...SOURCE, '--image', '{dir}/src.img', '--state-dir', '{peerdir}/sst', '--log-level', 'error'], says: /PC_ERR_SAME_IMAGE/ },
  { name: 'source: D given the same file through a symlink', files: { ...SRC_IMAGE, 'link.img': { symlink: 'src.img' } }, peer: { argv: [...DEST, '--image', '{dir}/link.img', '--force', '--state-dir', '{peerdir}/st'] }, argv: [...SOURCE, '--image', '{dir}/src.img', '--state-dir', '{peerdir}/sst', '--log-level', 'error'], says: /PC_ERR_SAME_IMAGE/ },
  // Case 5: the export is not offered to the network by mistake.
  { name: 'dest: --nbd-listen on every address without TLS', argv: [...DEST, '--image', '{dir}/d.img', '--nbd-listen', '0.0.0.0:{port2}'], says: /reachable from other hosts/ },
  { name: 'dest: --nbd-socket-mode not a mode', argv: [...DEST, '--image', '{dir}/d.img', '--nbd-socket', '{dir}/n.sock', '--nbd-socket-mode', 'rw'], says: /--nbd-socket-mode must be an octal mode/ },
  { name: 'dest: --nbd-tls-cert without an export', files: { 'c.pem': 'x\n', 'k.pem': 'y\n' }, argv: [...DEST, '--image', '{dir}/d.img', '--nbd-tls-cert', '{dir}/c.pem', '--nbd-tls-key', '{dir}/k.pem'], says: /need an export/ },
  // Case 8: S checks its image before connecting.
  { name: 'source: --image is a directory', files: { img: { dir: true } }, argv: [...SOURCE, '--image', '{dir}/img'], says: /is a directory, not an image file/ },
  { name: 'source: --image is empty', files: { 'src.img': '' }, argv: [...SOURCE, '--image', '{dir}/src.img'], says: /is empty \(0 bytes\)/ },
  { name: 'source: --image missing', argv: [...SOURCE, '--image', '{dir}/src.img'], says: /--image .*src\.img/ },
  { name: 'source: --image is a character device', argv: [...SOURCE, '--image', '/dev/null', '--state-dir', '{dir}/st'], says: /neither a regular file nor a block device/ },
  { name: 'source: --image the user cannot read', user: 'nobody', files: { 'src.img': { content: Buffer.alloc(65536, 1), mode: 0o600 }, mine: { dir: true, owner: 'nobody' } }, argv: [...SOURCE, '--image', '{dir}/src.img', '--state-dir', '{dir}/mine/st'], says: /is not readable/ },
  { name: 'source: --image an NBD URI nobody serves', argv: [...SOURCE, '--image', 'nbd://127.0.0.1:{port2}/disk', '--state-dir', '{dir}/st'], says: /cannot reach the NBD export/ },
  { name: 'source: --state-dir is a regular file', files: { ...SRC_IMAGE, st: 'not a dir\n' }, argv: [...SOURCE, '--image', '{dir}/src.img', '--state-dir', '{dir}/st'], says: /--state-dir .*is not a directory/ },
  { name: 'source: --state-dir is a dangling symlink', files: { ...SRC_IMAGE, st: { symlink: 'gone' } }, argv: [...SOURCE, '--image', '{dir}/src.img', '--state-dir', '{dir}/st'], says: /--state-dir .*st is a symbolic link to nothing/ },
  // verify: a missing file is a mistake (2), not a mismatch (6) or an internal error (1).
  { name: 'verify: --dest-image missing', files: SRC_IMAGE, argv: ['verify', '--source-image', '{dir}/src.img', '--dest-image', '{dir}/dst.img'], says: /--dest-image .*does not exist/ },
  { name: 'verify: --writes missing', files: { ...SRC_IMAGE, 'dst.img': Buffer.alloc(64 * 1024, 7) }, argv: ['verify', '--source-image', '{dir}/src.img', '--dest-image', '{dir}/dst.img', '--writes', '{dir}/w.json'], says: /--writes .*does not exist/ },
];

/** A destination session file as D writes it (postcopy-dest-session/2), for rows about stale state dirs. */
function destSession(phase: string, imagePath: string): string {
  return JSON.stringify({ kind: 'postcopy-dest-session/2', sessionId: 'ab'.repeat(16), resumeKey: '00'.repeat(32), phase, size: 65536, blockSize: 65536, imagePath, image: null, stateDirCreated: true }) + '\n';
}

/** How long a row's command may take: a mistake is found at start, in well under a second unloaded. */
const EXIT_DEADLINE_MS = 20_000;
const PROBE = pathToFileURL(resolve(__dirname, 'helpers/listen-probe.mjs')).href;

interface Outcome {
  exit: number | string;
  stderr: string;
  /** Addresses the command bound, and those of them it had not closed when it exited. */
  bound: string[];
  leftBound: string[];
}

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function setUp(dir: string, files: Record<string, FileSpec>, uid: number | undefined): Promise<void> {
  for (const [rel, spec] of Object.entries(files)) {
    const path = join(dir, rel);
    mkdirSync(dirname(path), { recursive: true });
    if (typeof spec === 'string') writeFileSync(path, spec.replaceAll('{dir}', dir));
    else if (Buffer.isBuffer(spec)) writeFileSync(path, spec);
    else if ('symlink' in spec) symlinkSync(spec.symlink, path);
    else if ('serving' in spec) await serveUnix(path);
    else if ('dir' in spec) mkdirSync(path, { recursive: true });
    else writeFileSync(path, spec.content ?? '');
    if (typeof spec === 'object' && !Buffer.isBuffer(spec) && !('symlink' in spec) && !('serving' in spec)) {
      if (spec.mode !== undefined) chmodSync(path, spec.mode);
      if (spec.owner === 'nobody' && uid !== undefined) chownSync(path, uid, uid);
    }
  }
}

async function serveUnix(path: string): Promise<void> {
  const server = createServer((s) => s.destroy());
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => res());
  });
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
}

function listenBusy(): Promise<{ server: Server; port: number }> {
  return new Promise((res, rej) => {
    const server = createServer((s) => s.destroy());
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res({ server, port: (server.address() as { port: number }).port }));
  });
}

function startProcess(argv: string[], o: { user?: 'nobody'; env?: Record<string, string>; listenLog: string }) {
  const node = [process.execPath, ...AGENT_NODE_FLAGS, '--import', PROBE, CLI, ...argv];
  const [cmd, ...args] = o.user ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', ...node] : node;
  const child = spawn(cmd!, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, POSTCOPY_LOG_LEVEL: 'info', POSTCOPY_TEST_LISTEN_LOG: o.listenLog, ...o.env },
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exit = new Promise<number | string>((res) => {
    child.once('exit', (code, signal) => res(code ?? String(signal)));
    child.once('error', (e) => res(`not started: ${e.message}`));
  });
  return { child, exit, stderr: () => stderr };
}

function listenedIn(log: string): { bound: string[]; leftBound: string[] } {
  const lines = existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter((l) => l.length > 0) : [];
  const notes = lines.map((l) => JSON.parse(l) as { event: 'bound' | 'closed'; address: string });
  const bound = notes.filter((n) => n.event === 'bound').map((n) => n.address);
  // One address may be bound, released and bound again (a check, then the real listener).
  const leftBound = [...bound];
  for (const n of notes) if (n.event === 'closed') leftBound.splice(leftBound.indexOf(n.address), 1);
  return { bound, leftBound };
}


async function runMistake(m: Mistake): Promise<{ outcome: Outcome; changes: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-mistake-'));
  const probeDir = mkdtempSync(join(tmpdir(), 'postcopy-probe-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }), () => rmSync(probeDir, { recursive: true, force: true }));
  chmodSync(probeDir, 0o777);
  const uid = m.user ? NOBODY : undefined;
  if (m.user) chmodSync(dir, 0o755);
  await setUp(dir, { ticket: { content: TICKET, mode: 0o600, owner: 'nobody' }, ...m.files }, uid);

  const ports: Record<string, string> = { port: String(await freePort()), port2: String(await freePort()) };
  if (m.argv.some((a) => a.includes('{busy}')) || m.peer?.argv.some((a) => a.includes('{busy}'))) {
    const busy = await listenBusy();
    cleanups.push(() => new Promise<void>((r) => busy.server.close(() => r())));
    ports.busy = String(busy.port);
  }
  // {peerdir}: outside the snapshot, for what a peer (or the command) may create and remove on its own.
  const peerDir = mkdtempSync(join(tmpdir(), 'postcopy-peer-'));
  cleanups.push(() => rmSync(peerDir, { recursive: true, force: true }));
  const fill = (argv: string[]) => argv.map((a) => a.replace(/\{(dir|peerdir|ticket|port|port2|busy)\}/g, (_, k: string) => (k === 'dir' ? dir : k === 'peerdir' ? peerDir : k === 'ticket' ? join(dir, 'ticket') : ports[k]!)));

  if (m.peer) {
    const peer = startProcess(fill(m.peer.argv), { listenLog: join(probeDir, 'peer-listened.jsonl') });
    cleanups.push(async () => {
      peer.child.kill('SIGKILL');
      await peer.exit;
    });
    const ready = m.peer.ready ?? /"msg":"listening for the source"/;
    await waitUntil(() => ready.test(peer.stderr()) || peer.child.exitCode !== null, 'the peer to be ready');
    if (peer.child.exitCode !== null) throw new Error(`the peer exited ${peer.child.exitCode}: ${peer.stderr()}`);
  }

  const before = snapshotTree(dir);
  const listenLog = join(probeDir, 'listened.jsonl');
  const p = startProcess(fill(m.argv), { user: m.user, env: m.env, listenLog });
  const timer = setTimeout(() => p.child.kill('SIGKILL'), EXIT_DEADLINE_MS);
  const exit = await p.exit;
  clearTimeout(timer);
  return { outcome: { exit, stderr: p.stderr(), ...listenedIn(listenLog) }, changes: treeChanges(before, snapshotTree(dir), m.mayCreate) };
}

describe('operator mistakes: one line, exit 2 (or the documented code), nothing listened, nothing of the operator touched', () => {
  for (const m of MISTAKES) {
    // A row run as the second user needs setpriv (a missing tool fails under CI=true).
    it.skipIf(m.user !== undefined && skipWithout(['setpriv']))(m.name, async () => {
      const { outcome, changes } = await runMistake(m);
      const lines = outcome.stderr.split('\n').filter((l) => l.length > 0);
      const context = `stderr:\n${outcome.stderr}`;
      expect(outcome.exit, context).toBe(m.exit ?? 2);
      expect(lines, context).toHaveLength(1);
      expect(lines.filter((l) => /^\s+at /.test(l)), context).toEqual([]);
      if (m.says) expect(lines[0], context).toMatch(m.says);
      expect(outcome.leftBound, 'listeners the command left bound').toEqual([]);
      if (!m.portMistake) expect(outcome.bound, 'listeners the command bound').toEqual([]);
      expect(changes, 'files changed, deleted or created').toEqual([]);
    });
  }
});
