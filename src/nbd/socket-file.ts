// A Unix socket file for the NBD server that is never reachable with a wider mode than asked, and
// never takes the place of a file that is not a stale socket: nothing the operator owns is replaced.
import { chmod, link, lstat, mkdtemp, rmdir, unlink } from 'node:fs/promises';
import net from 'node:net';
import { basename, dirname, join } from 'node:path';
import { PRIVATE_FILE_MODE } from '../common/constants.js';
import { UsageError } from '../common/errors.js';

/** Mode of the socket file unless told otherwise: only its owner may connect (DESIGN §1: Unix sockets 0600). */
export const DEFAULT_SOCKET_MODE = PRIVATE_FILE_MODE;

/** The file we bound, so that closing removes it only if it is still ours. */
export interface SocketFile {
  path: string;
  dev: number;
  ino: number;
}

/**
 * What is at path now: nothing, or a socket nobody answers on (left by an earlier run, safe to replace).
 * Anything else is refused: a file that is not a socket, or a socket someone serves on.
 */
export async function checkSocketPath(path: string, option = '--nbd-socket'): Promise<'absent' | 'stale'> {
  const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw new UsageError('PC_ERR_USAGE', `${option} ${path}: ${e.message}`);
  });
  if (!st) {
    const dir = await lstat(dirname(path)).catch(() => undefined);
    if (!dir?.isDirectory()) throw new UsageError('PC_ERR_USAGE', `${option} ${path}: directory ${dirname(path)} does not exist`);
    return 'absent';
  }
  if (!st.isSocket()) {
    throw new UsageError('PC_ERR_USAGE', `${option} ${path} exists and is not a socket; it is left alone: remove it yourself or choose another path`);
  }
  const probe = await probeSocket(path);
  if (probe === 'live') {
    throw new UsageError('PC_ERR_USAGE', `${option} ${path}: another process serves on this socket; stop it or choose another path`);
  }
  if (probe !== 'ECONNREFUSED') {
    throw new UsageError('PC_ERR_USAGE', `${option} ${path}: cannot tell whether this socket is stale (${probe}); it is left alone`);
  }
  return 'stale';
}

/**
 * Listen on path with the given mode, race-free: bind inside a fresh 0700 directory next to path (nobody
 * else can reach the socket there, whatever the umask), chmod it, then hard-link it into place. link(2)
 * fails if anything appeared at path meanwhile, so we never replace what we did not check.
 */
export async function listenUnix(server: net.Server, path: string, mode: number, option = '--nbd-socket'): Promise<SocketFile> {
  const state = await checkSocketPath(path, option);
  const privateDir = await mkdtemp(join(dirname(path), `.${basename(path)}.`));
  const bound = join(privateDir, 's');
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(bound, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(bound, mode);
    if (state === 'stale') await unlink(path).catch(() => undefined);
    await link(bound, path).catch((e: NodeJS.ErrnoException) => {
      throw new UsageError('PC_ERR_USAGE', `${option} ${path}: ${e.code === 'EEXIST' ? 'a file appeared there while we started; it is left alone' : e.message}`);
    });
    const st = await lstat(path);
    return { path, dev: st.dev, ino: st.ino };
  } catch (e) {
    server.close();
    throw e;
  } finally {
    // The socket stays bound to its inode: the public link is the only name left.
    await unlink(bound).catch(() => undefined);
    await rmdir(privateDir).catch(() => undefined);
  }
}

/** Remove the socket file at close, only if it is still the one we made. */
export async function removeSocketFile(f: SocketFile): Promise<void> {
  const st = await lstat(f.path).catch(() => undefined);
  if (st && st.isSocket() && st.dev === f.dev && st.ino === f.ino) await unlink(f.path).catch(() => undefined);
}

/** 'live' when something accepts connections on path, else the connect error's code (ECONNREFUSED: stale). */
function probeSocket(path: string): Promise<string> {
  return new Promise((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve('live');
    });
    probe.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}
