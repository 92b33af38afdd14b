// A connected pair of real TCP sockets on 127.0.0.1 (port 0), for tests that want the kernel in the loop.
import { createServer, connect, type Socket } from 'node:net';
import { once } from 'node:events';

/** [client, server] sockets of one fresh loopback connection; the listener is closed once it accepted. */
export async function tcpPair(): Promise<[Socket, Socket]> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect(port, '127.0.0.1');
  const [[serverSide]] = await Promise.all([accepted, once(client, 'connect')]);
  server.close();
  return [client, serverSide];
}
