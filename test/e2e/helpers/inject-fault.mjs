// Preloaded (`node --import`) into a real `postcopy` process by tests: a bug stand-in chosen by $POSTCOPY_TEST_FAULT.
//   mkdir: every fs.mkdirSync throws a plain Error (an unexpected failure inside a command).
//   callback-throw: a timer callback throws a TypeError 300 ms after start (a failure no command catches).
import fs from 'node:fs';
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
}
