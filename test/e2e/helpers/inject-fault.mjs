// Preloaded (`node --import`) into a real `postcopy` process by tests: a bug stand-in chosen by $POSTCOPY_TEST_FAULT.
//   mkdir: every fs.mkdirSync throws a plain Error (an unexpected failure inside a command).
//   callback-throw: a timer callback throws a TypeError 300 ms after start (a failure no command catches).
//   steal-port: the first port the process binds and releases is taken at once by another listener (as another
//     process would in the moment between a check and the real bind).
import fs from 'node:fs';
import net from 'node:net';
import { syncBuiltinESMExports } from 'node:module';

const fault = process.env.POSTCOPY_TEST_FAULT;
if (fault === 'mkdir') {
  fs.mkdirSync = () => {
    throw new Error('injected mkdir failure');
  };
  syncBuiltinESMExports();
} else if (fault === 'callback-throw') {
  setTimeout(() => {
    throw new TypeError('injected callback failure');
  }, 300);
} else if (fault === 'steal-port') {
  const close = net.Server.prototype.close;
  let stolen = false;
  net.Server.prototype.close = function (cb) {
    const addr = this.address();
    if (stolen || !addr || typeof addr !== 'object') return close.call(this, cb);
    stolen = true;
    return close.call(this, (...args) => {
      const thief = net.createServer((s) => s.destroy());
      thief.unref();
      thief.listen(addr.port, addr.address, () => cb?.(...args));
    });
  };
}
