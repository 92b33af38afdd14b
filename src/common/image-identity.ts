// Which file an image is, across paths: the host it lives on plus its device and inode numbers. Two paths
// with the same identity (hard link, symlink, bind mount) are one file; S sends its identity in BEGIN so D
// can refuse to write over the image it is migrating from.
import { fstatSync, readFileSync, statSync, type BigIntStats } from 'node:fs';
import { hostname } from 'node:os';

/** A file on one host; dev and ino as decimal strings (64-bit values do not fit a JSON number). */
export interface FileIdentity {
  dev: string;
  ino: string;
}

export interface ImageIdentity extends FileIdentity {
  host: string;
}

let cachedHost: string | null = null;

/** This host's identity: its machine-id (stable across reboots), else its hostname. */
export function hostIdentity(): string {
  if (cachedHost !== null) return cachedHost;
  for (const path of ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    try {
      const id = readFileSync(path, 'utf8').trim();
      if (/^[0-9a-f]{16,64}$/i.test(id)) return (cachedHost = `machine-id:${id.toLowerCase()}`);
    } catch {
      // Not there: try the next one.
    }
  }
  return (cachedHost = `hostname:${hostname()}`);
}

function identityOf(st: BigIntStats): FileIdentity {
  return { dev: st.dev.toString(), ino: st.ino.toString() };
}

export function fdIdentity(fd: number): FileIdentity {
  return identityOf(fstatSync(fd, { bigint: true }));
}

/** The identity of the file `path` resolves to (symlinks followed), or null when there is none (or it cannot be reached). */
export function pathIdentity(path: string): FileIdentity | null {
  try {
    const st = statSync(path, { bigint: true, throwIfNoEntry: false });
    return st ? identityOf(st) : null;
  } catch {
    return null;
  }
}

export function sameFile(a: FileIdentity | null | undefined, b: FileIdentity | null | undefined): boolean {
  return !!a && !!b && a.dev === b.dev && a.ino === b.ino;
}

export function describeIdentity(id: FileIdentity): string {
  return `device ${id.dev}, inode ${id.ino}`;
}

/** What S says about its image in BEGIN: a file's identity on this host, or nothing (an NBD backend). */
export function sourceImageIdentity(image: object): ImageIdentity | null {
  const file = image as { fileIdentity?: () => FileIdentity };
  return typeof file.fileIdentity === 'function' ? { host: hostIdentity(), ...file.fileIdentity() } : null;
}
