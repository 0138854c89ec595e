// Loopback port helpers for the tools that launch servers as child processes
// (fault harness, scale test, benchmark).
import { connect, createServer } from 'node:net';

/**
 * n distinct ports that were free a moment ago (the servers bind them right
 * after). They are held together before any is let go: ports taken one at a
 * time may repeat, as a port let go is free to be handed out again at once.
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  try {
    return await Promise.all(
      servers.map(
        (server) =>
          new Promise<number>((resolve, reject) => {
            server.once('error', reject);
            server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
          }),
      ),
    );
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => (server.listening ? server.close(resolve) : resolve(undefined)))));
  }
}

/** One port that was free a moment ago; take several at once with freePorts. */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0];
}

/** True when something accepts TCP connections on the loopback port. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
