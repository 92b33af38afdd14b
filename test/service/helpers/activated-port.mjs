// Run under systemd-socket-activate by test/service/listen-fds.test.ts (needs the built dist/): adopts the passed
// sockets through listen-fds, serves a SharedMigrationPort on the one named `migration`, and answers on the one
// named `control` with what it found (the sockets, and whether LISTEN_* were left in its environment).
import { createServer } from 'node:net';
import { silentLogger } from '../../../dist/common/logger.js';
import { nullEvents } from '../../../dist/common/events.js';
import { fdNamed, takeListenFds } from '../../../dist/service/listen-fds.js';
import { SharedMigrationPort } from '../../../dist/service/migration-port.js';

const sockets = takeListenFds();
const envLeft = ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'].filter((k) => k in process.env);
const port = new SharedMigrationPort({ fd: fdNamed(sockets, 'migration'), log: silentLogger(), events: nullEvents, handshakeTimeoutMs: 2000 });
const address = await port.listen();
const control = createServer((s) => s.end(`${JSON.stringify({ pid: process.pid, sockets, envLeft, address })}\n`));
control.listen({ fd: fdNamed(sockets, 'control') });
process.on('SIGTERM', () => {
  port.close();
  control.close();
});
