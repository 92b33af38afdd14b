// Checks of an agent's command line against this host, made before anything listens or is written: each mistake
// becomes one UsageError (exit 2) naming the option, what was found and what to do instead.
import { accessSync, constants, lstatSync, statSync, type Stats } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { UsageError } from '../common/errors.js';
import { parseLogLevel, type LogLevel } from '../common/logger.js';
import { loadTlsFiles, type Endpoint, type TlsFiles } from '../link/connect.js';
import { checkSocketPath as checkSocketFile } from '../nbd/socket-file.js';
import { optional } from './args.js';
import { MAX_SOCKET_PATH_BYTES } from './constants.js';

type Values = Record<string, string | boolean | undefined>;

function usage(text: string): UsageError {
  return new UsageError('PC_ERR_USAGE', text);
}

function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

function statIfAny(path: string, follow = true): Stats | null {
  try {
    return follow ? statSync(path) : lstatSync(path);
  } catch {
    return null;
  }
}

function checkAccess(path: string, mode: number, text: string): void {
  try {
    accessSync(path, mode);
  } catch (e) {
    throw usage(`${text} (${errnoOf(e)})`);
  }
}

/** The options both agents share (log level, events file, TLS files), checked; no file is opened for writing. */
export function checkAgentOptions(values: Values): { logLevel: LogLevel; tls: TlsFiles | undefined } {
  const logLevel = parseLogLevel(optional(values, 'log-level'));
  const events = optional(values, 'events');
  if (events !== undefined) checkWritableFile(events, '--events');
  const tls = loadTlsFiles(optional(values, 'tls-cert'), optional(values, 'tls-key'), optional(values, 'tls-ca'));
  if (tls) checkTls(tls);
  return { logLevel, tls };
}

/** Certificate, key and CA that TLS would reject only when the first peer connects. */
function checkTls(tls: TlsFiles): void {
  try {
    createSecureContext({ cert: tls.cert, key: tls.key, ca: tls.ca });
  } catch (e) {
    throw usage(`--tls-cert, --tls-key, --tls-ca: not a usable certificate, key and CA (${(e as Error).message}); give PEM files, the key matching the certificate`);
  }
}

/** A directory that must exist (or be creatable) and be writable by us. */
function checkDirWritable(dir: string, what: string, path: string): void {
  const st = statIfAny(dir);
  if (!st) throw usage(`${what} ${path}: directory ${dir} does not exist; create it first`);
  if (!st.isDirectory()) throw usage(`${what} ${path}: ${dir} is not a directory`);
  checkAccess(dir, constants.W_OK | constants.X_OK, `${what} ${path}: cannot create files in ${dir} as uid ${process.getuid?.() ?? '?'}`);
}

/** A file we append to or create (events, logs): not a directory; its directory exists and is writable. */
export function checkWritableFile(path: string, what: string): void {
  const st = statIfAny(path);
  if (!st) {
    if (statIfAny(path, false)) throw usage(`${what} ${path} is a symbolic link to nothing; name the file itself`);
    checkDirWritable(dirname(resolve(path)), what, path);
    return;
  }
  if (st.isDirectory()) throw usage(`${what} ${path} is a directory; name a file in it`);
  checkAccess(path, constants.W_OK, `${what} ${path} is not writable`);
}

/** D's image: a regular file or block device we can read and write, or a new file in a writable directory. */
export function checkImagePath(path: string, what = '--image'): void {
  const st = statIfAny(path);
  if (st && !st.isFile() && !st.isBlockDevice()) {
    throw usage(`${what} ${path} is ${st.isDirectory() ? 'a directory' : 'not a regular file or block device'}; name the image file (it is created if missing)`);
  }
  if (st) checkAccess(path, constants.R_OK | constants.W_OK, `${what} ${path} is not readable and writable`);
  else checkWritableFile(path, what);
}

/** An image we only read (a fallback): a non-empty regular file or block device we can read. */
export function checkReadableImage(path: string, what: string): void {
  const st = statIfAny(path);
  if (!st) throw usage(`${what} ${path} does not exist`);
  if (!st.isFile() && !st.isBlockDevice()) throw usage(`${what} ${path} is ${st.isDirectory() ? 'a directory' : 'not a regular file or block device'}; name the image file`);
  if (st.isFile() && st.size === 0) throw usage(`${what} ${path} is empty (0 bytes); name the image itself`);
  checkAccess(path, constants.R_OK, `${what} ${path} is not readable`);
}

/** A state directory: an existing writable directory, or one `mkdir -p` can make. */
export function checkStateDir(path: string, what = '--state-dir'): void {
  const st = statIfAny(path);
  // A dangling symlink would be followed by mkdir only after the peer was reached: refused here.
  if (!st && statIfAny(path, false)) throw usage(`${what} ${path} is a symbolic link to nothing; name the directory itself`);
  if (st) {
    if (!st.isDirectory()) throw usage(`${what} ${path} exists and is not a directory; name a directory for the session state`);
    checkAccess(path, constants.W_OK | constants.X_OK, `${what} ${path} is not writable`);
    return;
  }
  let parent = dirname(resolve(path));
  while (!statIfAny(parent) && dirname(parent) !== parent) parent = dirname(parent);
  checkDirWritable(parent, what, path);
}

/** A Unix socket path we will listen on: never replaces a file that is not a socket, nor a socket someone serves. */
export async function checkSocketPath(path: string, what: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) throw usage(`${what} ${path} is longer than a Unix socket path may be (${MAX_SOCKET_PATH_BYTES} bytes); use a shorter path`);
  const st = statIfAny(path, false);
  if (!st) {
    checkDirWritable(dirname(resolve(path)), what, path);
    return;
  }
  // Not a socket, a live one, or one that cannot be probed: refused (the same rule the export applies when it binds).
  await checkSocketFile(path, what);
}

/** A Unix socket someone else made and serves (QEMU's QMP): it must be there and be a socket. */
export function checkExistingSocket(path: string, what: string): void {
  const st = statIfAny(path, false);
  if (!st) throw usage(`${what} ${path} does not exist; start the process that serves it first`);
  if (!st.isSocket()) throw usage(`${what} ${path} is not a socket`);
}

/** A TCP port bound for us until `release()`: nothing is served on it (connections are dropped). */
export interface PortHold {
  readonly port: number;
  release(): Promise<void>;
}

/** Bind `ep` now, so a port in use or an address not of this host is found before anything listens. */
export async function holdPort(ep: Endpoint, what: string): Promise<PortHold> {
  const server: Server = createServer((s) => s.destroy());
  try {
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen({ port: ep.port, host: ep.host, exclusive: true }, () => {
        server.off('error', rej);
        res();
      });
    });
  } catch (e) {
    throw listenFailure(e, ep, what);
  }
  // Held, not served: it must not keep the process alive, and releasing it twice is harmless.
  server.unref();
  const addr = server.address();
  let released: Promise<void> | null = null;
  return {
    port: typeof addr === 'object' && addr ? addr.port : ep.port,
    release: () => (released ??= new Promise<void>((res) => server.close(() => res()))),
  };
}

/** Check-then-release: for a listener bound a moment later by code that binds itself (see dest-command). */
export async function checkPortFree(ep: Endpoint, what: string): Promise<void> {
  await (await holdPort(ep, what)).release();
}

/** A failed bind as the operator's mistake it is (one line), or the error itself when it is not one. */
export function listenFailure(e: unknown, ep: Endpoint, what: string): unknown {
  const at = `${what} ${ep.host}:${ep.port}`;
  switch ((e as NodeJS.ErrnoException).code) {
    case 'EADDRINUSE':
      return usage(`${at}: the port is already in use (see: ss -ltnp 'sport = :${ep.port}'); stop that process or choose another port`);
    case 'EADDRNOTAVAIL':
      return usage(`${at}: ${ep.host} is not an address of this host; listen on one of its addresses`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
      return usage(`${at}: host name ${ep.host} not found; give an address of this host`);
    case 'EACCES':
      return usage(`${at}: not allowed to listen on port ${ep.port} (ports below 1024 need privileges); choose another port`);
    default:
      return e;
  }
}
