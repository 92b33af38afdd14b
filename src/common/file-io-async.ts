// Positional reads on libuv's thread pool: for bulk work that must not hold the event loop that also serves
// urgent requests (a page-cache miss or a large copy would stall every frame behind it).
import { read } from 'node:fs';

function readOnce(fd: number, buf: Buffer, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Read `length` bytes at `offset` into the front of `buf` off the event loop; past the end of file reads as zeroes. */
export async function readIntoFullyOffLoop(fd: number, buf: Buffer, offset: number, length: number): Promise<Buffer> {
  let done = 0;
  while (done < length) {
    const n = await readOnce(fd, buf, done, length - done, offset + done);
    if (n === 0) {
      buf.fill(0, done, length);
      break;
    }
    done += n;
  }
  return buf;
}
