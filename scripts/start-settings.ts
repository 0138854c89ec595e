// The settings of `npm start` (scripts/start.ts): where its three servers
// listen and keep their data. docs/configuration.md is generated from them.
import { SERVER_PORTS, onSwitch, optionalText, text, type ServiceName, type SettingValues } from '../common/settings.js';

const port = (service: ServiceName, kind: 'grpc' | 'metrics') => {
  const upper = service.toUpperCase();
  const [flag, env, what] = kind === 'grpc' ? [`${service}-port`, `${upper}_PORT`, 'gRPC port'] : [`${service}-metrics-port`, `${upper}_METRICS_PORT`, '/metrics port'];
  return optionalText(flag, env, `The ${service}'s ${what}; wins over --port-base.`, `${SERVER_PORTS[service][kind]}, or from the port base`);
};

/** Offsets from --port-base: gRPC at base+1..3, /metrics at base+11..13. */
export const PORT_OFFSETS: Record<ServiceName, { grpc: number; metrics: number }> = {
  terminal: { grpc: 1, metrics: 11 },
  issuer: { grpc: 2, metrics: 12 },
  authorizer: { grpc: 3, metrics: 13 },
};

export const START_SETTINGS = {
  portBase: optionalText('port-base', 'TAPCREDIT_PORT_BASE', 'Moves every port: gRPC of the terminal, issuer and authorizer at base+1, +2, +3, their /metrics at base+11, +12, +13.', 'the fixed ports below'),
  terminalPort: port('terminal', 'grpc'),
  issuerPort: port('issuer', 'grpc'),
  authorizerPort: port('authorizer', 'grpc'),
  terminalMetricsPort: port('terminal', 'metrics'),
  issuerMetricsPort: port('issuer', 'metrics'),
  authorizerMetricsPort: port('authorizer', 'metrics'),
  host: text('host', 'HOST', '127.0.0.1', 'Address every server binds to.'),
  dataDir: text('data-dir', 'TAPCREDIT_DATA_DIR', 'data', 'Directory of the SQLite files, keys and certificates; a second system side by side needs its own.'),
  insecure: onSwitch('insecure', undefined, 'Plaintext on loopback instead of mTLS.'),
};

function portNumber(name: string, raw: string): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n > 65535) throw new Error(`${name} must be a port number, got ${JSON.stringify(raw)}`);
  return n;
}

/** Each server's gRPC and /metrics port: its own setting, else the port base's, else the default. */
export function startPorts(s: SettingValues<typeof START_SETTINGS>): Record<ServiceName, { grpc: number; metrics: number }> {
  const base = s.portBase === undefined ? undefined : portNumber('--port-base', s.portBase);
  if (base !== undefined && base + 13 > 65535) throw new Error('--port-base leaves no room for 13 ports above it');
  const pick = (service: ServiceName, kind: 'grpc' | 'metrics', own: string | undefined) =>
    own !== undefined ? portNumber(`--${service}-${kind === 'grpc' ? '' : 'metrics-'}port`, own) : base !== undefined ? base + PORT_OFFSETS[service][kind] : SERVER_PORTS[service][kind];
  return {
    terminal: { grpc: pick('terminal', 'grpc', s.terminalPort), metrics: pick('terminal', 'metrics', s.terminalMetricsPort) },
    issuer: { grpc: pick('issuer', 'grpc', s.issuerPort), metrics: pick('issuer', 'metrics', s.issuerMetricsPort) },
    authorizer: { grpc: pick('authorizer', 'grpc', s.authorizerPort), metrics: pick('authorizer', 'metrics', s.authorizerMetricsPort) },
  };
}
