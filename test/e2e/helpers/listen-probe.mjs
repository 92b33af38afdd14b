// Preloaded (`node --import`) into a real `postcopy` process by tests: appends one JSON line to
// $POSTCOPY_TEST_LISTEN_LOG each time a listener of the process is bound and each time one is closed, so a test
// proves a command never listened, or released every port it bound to check it.
import { appendFileSync } from 'node:fs';
import net from 'node:net';

const log = process.env.POSTCOPY_TEST_LISTEN_LOG;
const note = (event, address) => appendFileSync(log, JSON.stringify({ event, address }) + '\n');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (log) {
    this.once('listening', () => {
      const address = JSON.stringify(this.address());
      note('bound', address);
      this.once('close', () => note('closed', address));
    });
  }
  return listen.apply(this, args);
};
